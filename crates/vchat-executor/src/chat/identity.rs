//! Who a request is: its user, room and tile name, checked, and a stream bound
//! to the first user and room it got in with.

use std::collections::HashMap;

use vchat_core::value::Kind;
use vchat_core::{Document, DocumentArray, Error, MAX_NAME_BYTES, StreamId};

use super::VideoChatExecutor;
use super::config::{DEFAULT_ROOM, NAME_TAG, PAUSED_TAG};
use super::room::Identity;

impl VideoChatExecutor {
    /// The one user and room of a request's documents (none without documents):
    /// a request naming several is refused before anything changes.
    pub(super) fn request_identity(
        &self,
        docs: &DocumentArray,
    ) -> Result<Option<(String, String)>, Error> {
        let mut who: Option<(String, String)> = None;
        for doc in docs.iter() {
            let (user, room) = self.identity_of(doc)?;
            match &who {
                None => who = Some((user, room)),
                Some((u, _)) if *u != user => {
                    return Err(self.reject(format!(
                        "a request carries frames of several users ({u:?} and {user:?}): \
                         send each user's frames on a stream of their own"
                    )));
                }
                Some((_, r)) if *r != room => {
                    return Err(self.reject(format!(
                        "a request names several rooms ({r:?} and {room:?}): a stream is one \
                         user in one room"
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(who)
    }

    /// The user and room of `doc`, checked.
    pub(super) fn identity_of(&self, doc: &Document) -> Result<(String, String), Error> {
        let user = match doc.tag_str("user") {
            Some("") => return Err(self.reject("tags.user is empty")),
            Some(u) => u,
            None if doc.tags.contains_key("user") => {
                return Err(self.reject("tags.user must be a string"));
            }
            None => {
                return Err(self.reject("missing tags.user: every frame needs the tag user=<name>"));
            }
        };
        let room = match (doc.tag_str("room"), doc.tags.contains_key("room")) {
            (Some(r), _) => r,
            (None, false) => DEFAULT_ROOM,
            (None, true) => return Err(self.reject("tags.room must be a string")),
        };
        for (tag, name) in [("user", user), ("room", room)] {
            if name.len() > MAX_NAME_BYTES {
                return Err(self.reject(format!(
                    "tags.{tag} is {} bytes, over the limit of {MAX_NAME_BYTES} bytes",
                    name.len()
                )));
            }
        }
        Ok((user.to_string(), room.to_string()))
    }

    /// The name on the tile of `doc`'s user (`tags.name`, else `user`), and
    /// whether their camera is paused (`tags.paused`), checked.
    pub(super) fn tile_of(&self, doc: &Document, user: &str) -> Result<(String, bool), Error> {
        let name = match (doc.tag_str(NAME_TAG), doc.tags.contains_key(NAME_TAG)) {
            (Some(n), _) if n.len() > MAX_NAME_BYTES => {
                return Err(self.reject(format!(
                    "tags.{NAME_TAG} is {} bytes, over the limit of {MAX_NAME_BYTES} bytes",
                    n.len()
                )));
            }
            (Some(n), _) if !n.is_empty() => n,
            (Some(_), _) | (None, false) => user,
            (None, true) => return Err(self.reject("tags.name must be a string")),
        };
        let paused = match doc.tags.get(PAUSED_TAG).map(|v| v.kind.as_ref()) {
            None | Some(None) => false,
            Some(Some(Kind::BoolValue(b))) => *b,
            Some(Some(_)) => return Err(self.reject("tags.paused must be true or false")),
        };
        Ok((name.to_string(), paused))
    }

    /// `Err` when `stream` is already someone else, or somewhere else (never for
    /// [`StreamId::UNKNOWN`], which is not bound).
    pub(super) fn check_identity(
        &self,
        streams: &HashMap<StreamId, Identity>,
        stream: StreamId,
        user: &str,
        room: &str,
    ) -> Result<(), Error> {
        match streams.get(&stream) {
            Some(id) if id.user != user || id.room != room => {
                // Not at info: a peer could make one line per frame it sends.
                tracing::debug!(
                    stream = stream.0,
                    user = %id.user,
                    room = %id.room,
                    other_user = user,
                    other_room = room,
                    "Frame refused: a stream cannot change its user or room"
                );
                Err(self.reject(format!(
                    "this stream is {:?} in room {:?}; a stream cannot change its user or room \
                     (got {user:?} in room {room:?}): open another stream",
                    id.user, id.room
                )))
            }
            _ => Ok(()),
        }
    }
}
