//! VideoChatExecutor: the executor of the video chat.
//!
//! Per room (`tags.room`, default one shared room) it keeps the latest frame of each
//! user (`tags.user`) in join order, and answers every frame with the vertical
//! concatenation of all present users' latest frames, or with the frame itself while
//! its user is alone, as the seed's Python executor does.
//!
//! A user leaves the mosaic when their stream ends (the gateway calls
//! [`Executor::stream_closed`]) or after `idle_timeout_s` without a frame. A frame
//! whose width differs from the room's is resized to the room's width, keeping its
//! aspect ratio. Frames are uint8 H×W×3 tensors; anything else is rejected for that
//! request only.
//!
//! ```yaml
//! jtype: VideoChatExecutor
//! with:
//!   idle_timeout_s: 5
//! ```

pub mod builtin;
mod mosaic;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use vchat_core::{DocumentArray, Error, Executor, RequestContext, StreamId, Tensor, async_trait};

pub use mosaic::{resize_to_width, stack_vertically};

/// The jtype this executor registers under.
pub const JTYPE: &str = "VideoChatExecutor";
/// Default seconds without a frame after which a user leaves.
pub const DEFAULT_IDLE_TIMEOUT_S: f64 = 5.0;
/// The room of frames that carry no `tags.room`.
pub const DEFAULT_ROOM: &str = "";

/// `with:` of a VideoChatExecutor.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VideoChatConfig {
    /// Seconds without a frame after which a user leaves the mosaic (their stream
    /// may still be open, e.g. a frozen client). Must be positive.
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: f64,
}

fn default_idle_timeout_s() -> f64 {
    DEFAULT_IDLE_TIMEOUT_S
}

impl Default for VideoChatConfig {
    fn default() -> Self {
        VideoChatConfig {
            idle_timeout_s: DEFAULT_IDLE_TIMEOUT_S,
        }
    }
}

/// One user's place in a room.
struct Slot {
    user: String,
    stream: StreamId,
    /// The latest frame, `height` × room width × 3.
    frame: Bytes,
    height: usize,
    last_seen: Instant,
}

#[derive(Default)]
struct Room {
    width: usize,
    /// In join order.
    slots: Vec<Slot>,
}

/// The runtime of a VideoChatExecutor, built from a [`VideoChatConfig`].
pub struct VideoChatExecutor {
    name: String,
    idle_timeout: Duration,
    rooms: Mutex<HashMap<String, Room>>,
}

impl VideoChatExecutor {
    /// A new executor named `name` in its Flow.
    pub fn new(config: VideoChatConfig, name: &str) -> Result<Self, String> {
        if !(config.idle_timeout_s.is_finite() && config.idle_timeout_s > 0.0) {
            return Err(format!(
                "with.idle_timeout_s must be a positive number of seconds, got {}",
                config.idle_timeout_s
            ));
        }
        Ok(VideoChatExecutor {
            name: name.to_string(),
            idle_timeout: Duration::from_secs_f64(config.idle_timeout_s),
            rooms: Mutex::new(HashMap::new()),
        })
    }

    /// The users present in `room`, in mosaic order.
    pub fn users(&self, room: &str) -> Vec<String> {
        self.lock()
            .get(room)
            .map(|r| r.slots.iter().map(|s| s.user.clone()).collect())
            .unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Room>> {
        // A panic elsewhere must not take the chat down: the map is consistent
        // between statements, so a poisoned lock is still usable.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reject(&self, message: impl Into<String>) -> Error {
        Error::Rejected {
            executor: self.name.clone(),
            message: message.into(),
        }
    }

    /// Stores `frame` as `user`'s latest and returns what to answer: the mosaic's
    /// parts when others are present, `None` while the user is alone.
    fn update(
        &self,
        room_name: &str,
        user: &str,
        stream: StreamId,
        frame: &Tensor,
        (h, w): (usize, usize),
    ) -> Option<(Vec<Bytes>, usize, usize)> {
        let now = Instant::now();
        let mut rooms = self.lock();
        let room = rooms.entry(room_name.to_string()).or_default();
        let timeout = self.idle_timeout;
        room.slots.retain(|s| {
            let keep = s.user == user || now.duration_since(s.last_seen) <= timeout;
            if !keep {
                tracing::info!(room = room_name, user = %s.user, "User left (idle)");
            }
            keep
        });
        if room.slots.iter().all(|s| s.user == user) {
            // Alone (or first): the room takes this user's width.
            room.width = w;
            for s in &mut room.slots {
                s.height = h;
            }
        }
        let (data, height) = if w == room.width {
            (frame.data().clone(), h)
        } else {
            resize_to_width(frame.data(), h, w, room.width)
        };
        match room.slots.iter_mut().find(|s| s.user == user) {
            Some(slot) => {
                slot.frame = data;
                slot.height = height;
                slot.stream = stream;
                slot.last_seen = now;
            }
            None => {
                tracing::info!(room = room_name, user, "User joined");
                room.slots.push(Slot {
                    user: user.to_string(),
                    stream,
                    frame: data,
                    height,
                    last_seen: now,
                });
            }
        }
        if room.slots.len() < 2 {
            return None;
        }
        let total: usize = room.slots.iter().map(|s| s.height).sum();
        let parts = room.slots.iter().map(|s| s.frame.clone()).collect();
        Some((parts, total, room.width))
    }
}

#[async_trait]
impl Executor for VideoChatExecutor {
    /// A room's frames must all reach the same replica to be composed together.
    fn route_by(&self) -> Option<&str> {
        Some("room")
    }

    async fn process(
        &self,
        docs: &mut DocumentArray,
        ctx: &RequestContext<'_>,
    ) -> Result<(), Error> {
        for doc in docs.iter_mut() {
            let user = match doc.tag_str("user") {
                Some("") => return Err(self.reject("tags.user is empty")),
                Some(u) => u.to_string(),
                None if doc.tags.contains_key("user") => {
                    return Err(self.reject("tags.user must be a string"));
                }
                None => {
                    return Err(
                        self.reject("missing tags.user: every frame needs the tag user=<name>")
                    );
                }
            };
            let room = match (doc.tag_str("room"), doc.tags.contains_key("room")) {
                (Some(r), _) => r.to_string(),
                (None, false) => DEFAULT_ROOM.to_string(),
                (None, true) => return Err(self.reject("tags.room must be a string")),
            };
            let Some(frame) = doc.tensor() else {
                return Err(self.reject(
                    "document has no tensor: send each frame as a uint8 [height, width, 3] tensor",
                ));
            };
            let dims = frame.frame_dims().map_err(|m| self.reject(m))?;
            // The copy into the mosaic happens outside the lock.
            if let Some((parts, height, width)) = self.update(&room, &user, ctx.stream, frame, dims)
            {
                let data = stack_vertically(&parts);
                let mosaic = Tensor::image(height, width, 3, data)
                    .map_err(|e| self.reject(format!("internal: {e}")))?;
                doc.set_tensor(mosaic);
            }
        }
        Ok(())
    }

    async fn stream_closed(&self, stream: StreamId) {
        let mut rooms = self.lock();
        rooms.retain(|name, room| {
            room.slots.retain(|s| {
                let gone = s.stream == stream;
                if gone {
                    tracing::info!(room = %name, user = %s.user, "User left (stream ended)");
                }
                !gone
            });
            !room.slots.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use vchat_core::Document;

    fn frame(user: &str, h: usize, w: usize, value: u8) -> DocumentArray {
        let t = Tensor::image(h, w, 3, Bytes::from(vec![value; h * w * 3])).unwrap();
        let mut d = Document::with_tensor(t);
        d.set_tag_str("user", user);
        DocumentArray(vec![d])
    }

    async fn send(
        ex: &VideoChatExecutor,
        docs: &mut DocumentArray,
        stream: u64,
    ) -> Result<(), Error> {
        let params = BTreeMap::new();
        let results = Default::default();
        let ctx = RequestContext {
            endpoint: "/",
            parameters: &params,
            stream: StreamId(stream),
            request_id: "r",
            results: &results,
        };
        ex.process(docs, &ctx).await
    }

    fn executor(idle: f64) -> VideoChatExecutor {
        VideoChatExecutor::new(
            VideoChatConfig {
                idle_timeout_s: idle,
            },
            "agg",
        )
        .unwrap()
    }

    /// The value of the first byte of each `band`-row band of the answer.
    fn bands(docs: &DocumentArray, band: usize) -> Vec<u8> {
        let t = docs[0].tensor().unwrap();
        let row = t.shape()[1] * 3;
        t.data().chunks(row * band).map(|c| c[0]).collect()
    }

    #[tokio::test]
    async fn mosaic_in_join_order() {
        let ex = executor(5.0);
        let mut a = frame("alice", 2, 3, 10);
        send(&ex, &mut a, 1).await.unwrap();
        assert_eq!(
            a[0].tensor().unwrap().shape(),
            &[2, 3, 3],
            "alone: own frame"
        );
        let mut b = frame("bob", 2, 3, 20);
        send(&ex, &mut b, 2).await.unwrap();
        assert_eq!(bands(&b, 2), vec![10, 20]);
        let mut c = frame("carol", 2, 3, 30);
        send(&ex, &mut c, 3).await.unwrap();
        let mut a2 = frame("alice", 2, 3, 11);
        send(&ex, &mut a2, 1).await.unwrap();
        assert_eq!(a2[0].tensor().unwrap().shape(), &[6, 3, 3]);
        assert_eq!(bands(&a2, 2), vec![11, 20, 30]);
    }

    #[tokio::test]
    async fn stream_end_removes_its_users() {
        let ex = executor(5.0);
        for (u, s, v) in [("alice", 1, 1), ("bob", 2, 2), ("carol", 3, 3)] {
            send(&ex, &mut frame(u, 1, 2, v), s).await.unwrap();
        }
        ex.stream_closed(StreamId(3)).await;
        assert_eq!(ex.users(DEFAULT_ROOM), vec!["alice", "bob"]);
        let mut a = frame("alice", 1, 2, 9);
        send(&ex, &mut a, 1).await.unwrap();
        assert_eq!(bands(&a, 1), vec![9, 2]);
    }

    #[tokio::test]
    async fn idle_users_leave() {
        let ex = executor(0.05);
        send(&ex, &mut frame("alice", 1, 2, 1), 1).await.unwrap();
        send(&ex, &mut frame("bob", 1, 2, 2), 2).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        let mut a = frame("alice", 1, 2, 3);
        send(&ex, &mut a, 1).await.unwrap();
        assert_eq!(a[0].tensor().unwrap().shape(), &[1, 2, 3]);
        assert_eq!(ex.users(DEFAULT_ROOM), vec!["alice"]);
    }

    #[tokio::test]
    async fn rooms_are_separate() {
        let ex = executor(5.0);
        let mut a = frame("alice", 1, 2, 1);
        a[0].set_tag_str("room", "r1");
        send(&ex, &mut a, 1).await.unwrap();
        let mut b = frame("bob", 1, 2, 2);
        b[0].set_tag_str("room", "r2");
        send(&ex, &mut b, 2).await.unwrap();
        assert_eq!(b[0].tensor().unwrap().shape(), &[1, 2, 3]);
        assert_eq!(ex.users("r1"), vec!["alice"]);
    }

    #[tokio::test]
    async fn other_widths_are_resized_keeping_aspect() {
        let ex = executor(5.0);
        send(&ex, &mut frame("alice", 2, 4, 1), 1).await.unwrap();
        let mut b = frame("bob", 4, 8, 2);
        send(&ex, &mut b, 2).await.unwrap();
        // bob's 4×8 becomes 2×4: the mosaic is 4 rows of width 4.
        assert_eq!(b[0].tensor().unwrap().shape(), &[4, 4, 3]);
        assert_eq!(bands(&b, 2), vec![1, 2]);
    }

    #[tokio::test]
    async fn bad_frames_are_rejected_without_changing_state() {
        let ex = executor(5.0);
        send(&ex, &mut frame("alice", 1, 2, 1), 1).await.unwrap();
        let mut no_user = frame("x", 1, 2, 1);
        no_user[0].tags.clear();
        let err = send(&ex, &mut no_user, 2).await.unwrap_err().to_string();
        assert!(err.contains("tags.user"), "{err}");
        let gray = Tensor::image(1, 2, 1, Bytes::from(vec![0u8; 2])).unwrap();
        let mut g = DocumentArray(vec![Document::with_tensor(gray)]);
        g[0].set_tag_str("user", "bob");
        let err = send(&ex, &mut g, 2).await.unwrap_err().to_string();
        assert!(err.contains("[height, width, 3]"), "{err}");
        let mut t = DocumentArray(vec![Document::new()]);
        t[0].set_tag_str("user", "bob");
        assert!(
            send(&ex, &mut t, 2)
                .await
                .unwrap_err()
                .to_string()
                .contains("no tensor")
        );
        assert_eq!(ex.users(DEFAULT_ROOM), vec!["alice"]);
    }

    #[test]
    fn config_parses_and_rejects_bad_values() {
        let c: VideoChatConfig = serde_saphyr::from_str("idle_timeout_s: 2.5\n").unwrap();
        assert_eq!(c.idle_timeout_s, 2.5);
        assert!(serde_saphyr::from_str::<VideoChatConfig>("idle: 1\n").is_err());
        assert!(
            VideoChatExecutor::new(
                VideoChatConfig {
                    idle_timeout_s: 0.0
                },
                "x"
            )
            .is_err()
        );
    }

    #[test]
    fn shipped_config_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.yml");
        let spec = vchat_core::config::load_executor(std::path::Path::new(path)).unwrap();
        assert_eq!(spec.jtype, JTYPE);
        assert_eq!(spec.with["idle_timeout_s"].0, 5);
    }
}
