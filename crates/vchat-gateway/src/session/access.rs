//! Who a stream is, the same for every door: the identity and room of its
//! access token when the Flow has `with.auth`, else of its first request; and
//! one stream per identity and room, a newer one replacing the older.
//!
//! A door hands the stream's `Credentials` to `Door::open`, whose gate verifies
//! them (`Access::seat`) and gives the stream a `Seat`. The session passes every
//! request through `Seat::check` and every reply through `Seat::reply`; the door
//! ends the stream once `Seat::replaced` fires. A stream takes its user's place
//! once the Flow has answered its first request without an error: the executor
//! has then moved the user's tile to it, and the older stream's end leaves the
//! user where they are.
//!
//! What a grant changes in requests, so that executors need not know tokens:
//!
//! - `tags.user` and `tags.room` are filled in from the token when absent; a
//!   request naming another user or room gets an ERROR response.
//! - `tags.name` is the token's `name` (or removed): the name on a tile comes
//!   from the token too.
//! - `can_publish: false` sets `tags.viewer: true` on every document: the chat
//!   answers with the room's mosaic without storing the frame (a viewer).
//! - `can_subscribe: false` takes the frames out of every reply: the peer gets
//!   acknowledgements (tags, status) without mosaics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prost_types::value::Kind;
use tokio_util::sync::CancellationToken;
use vchat_auth::{AuthError, Grant, Verifier};
use vchat_core::{Reply, Request};

/// The request tag (`true`) that makes the chat answer without storing the
/// frame: set on every request of a token with `canPublish: false`.
pub const VIEWER_TAG: &str = "viewer";

/// What a peer presented when it opened a stream.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The access token (gRPC `authorization: Bearer`, WebSocket `access_token`).
    pub token: Option<String>,
    /// The user the peer asks to be, when the door says at once (WebSocket `user`).
    pub user: Option<String>,
    /// The room the peer asks for, when the door says at once (WebSocket `room`).
    pub room: Option<String>,
}

/// A user in a room: `(room, user)`.
type Place = (String, String);

/// The identities of every open stream of a gateway, across its doors.
pub struct Access {
    verifier: Option<Verifier>,
    /// `(room, user)` → the seat that holds it and how to end its stream.
    holders: Mutex<HashMap<Place, (u64, Arc<Ending>)>>,
    serial: AtomicU64,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("verifier", &self.verifier)
            .finish()
    }
}

/// Ends a stream that a newer one of its identity replaced.
#[derive(Default)]
struct Ending {
    token: CancellationToken,
    reason: Mutex<String>,
}

impl Access {
    /// Streams need a token verified by `verifier`; `None`: the gateway is open,
    /// and names are whatever the requests say.
    pub fn new(verifier: Option<Verifier>) -> Arc<Self> {
        Arc::new(Access {
            verifier,
            holders: Mutex::new(HashMap::new()),
            serial: AtomicU64::new(0),
        })
    }

    /// An open gateway.
    pub fn open() -> Arc<Self> {
        Self::new(None)
    }

    /// The seat of a new stream, or why it may not open. With a token, the
    /// identity and room are the token's and the stream takes them over at once.
    pub(crate) fn seat(self: &Arc<Self>, creds: Credentials) -> Result<Arc<Seat>, AuthError> {
        let grant = match &self.verifier {
            Some(v) => {
                let grant = v.verify(creds.token.as_deref(), creds.room.as_deref())?;
                if let Some(user) = creds.user.as_deref()
                    && user != grant.identity
                {
                    return Err(AuthError::IdentityNotGranted {
                        granted: grant.identity,
                        asked: user.to_string(),
                    });
                }
                Some(grant)
            }
            None => None,
        };
        let seat = Seat {
            access: self.clone(),
            serial: self.serial.fetch_add(1, Ordering::Relaxed),
            ending: Arc::new(Ending::default()),
            claimed: Mutex::new(None),
            pending: Mutex::new(None),
            grant,
        };
        Ok(Arc::new(seat))
    }
}

/// One stream's identity: what its token grants, and its place as the one
/// stream of its user in its room.
pub(crate) struct Seat {
    access: Arc<Access>,
    serial: u64,
    ending: Arc<Ending>,
    claimed: Mutex<Option<(String, String)>>,
    /// The room and user of the first request, until a reply to it succeeds:
    /// only then does this stream take the place of an older one, so that the
    /// executor has given the user's tile to this stream before the older one
    /// ends (its end then leaves the user in place).
    pending: Mutex<Option<(String, String)>>,
    grant: Option<Grant>,
}

impl Seat {
    /// The token's grant, with access control on.
    pub(crate) fn grant(&self) -> Option<&Grant> {
        self.grant.as_ref()
    }

    /// Makes this stream the one of `user` in `room`, ending the one that was.
    fn claim(&self, room: &str, user: &str) {
        let key = (room.to_string(), user.to_string());
        let mut claimed = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        if claimed.is_some() {
            return;
        }
        let older = self
            .access
            .holders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), (self.serial, self.ending.clone()));
        if let Some((_, older)) = older {
            tracing::info!(
                user,
                room,
                "Newer connection of the same user: ending the older one"
            );
            *older.reason.lock().unwrap_or_else(|e| e.into_inner()) =
                format!("replaced by a newer connection of {user}");
            older.token.cancel();
        }
        *claimed = Some(key);
    }

    /// Fires when a newer stream of the same user and room took this one's place.
    pub(crate) fn replaced(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.ending.token.clone().cancelled_owned()
    }

    /// Why the stream was ended ([`Seat::replaced`]).
    pub(crate) fn replaced_reason(&self) -> String {
        self.ending
            .reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Checks a request against the grant and fills in what the grant says
    /// (see the module's documentation); `Err`: the message of its ERROR
    /// response. Without access control, the first request that names a user
    /// makes this stream that user's one in its room.
    pub(crate) fn check(&self, req: &mut Request) -> Result<(), String> {
        if req.docs.is_empty() {
            return Ok(());
        }
        let Some(grant) = &self.grant else {
            if let Some(doc) = req.docs.first()
                && let Some(user) = doc.tag_str("user")
            {
                let room = doc.tag_str("room").unwrap_or_default().to_string();
                self.expect((room, user.to_string()));
            }
            return Ok(());
        };
        self.expect((grant.room.clone(), grant.identity.clone()));
        for doc in req.docs.iter_mut() {
            let fields = &mut doc.tags;
            for (tag, granted) in [("user", &grant.identity), ("room", &grant.room)] {
                match fields.get(tag).and_then(|v| v.kind.as_ref()) {
                    None => {
                        fields.insert(tag.to_string(), vchat_core::string_value(granted.clone()));
                    }
                    Some(Kind::StringValue(s)) if s == granted => {}
                    Some(other) => {
                        let got = match other {
                            Kind::StringValue(s) => format!("{s:?}"),
                            _ => "a value that is not a string".to_string(),
                        };
                        return Err(format!(
                            "tags.{tag} is {got}, but the access token is for {tag} {granted:?}: \
                             leave tags.{tag} out or send the token's"
                        ));
                    }
                }
            }
            match &grant.name {
                Some(name) => {
                    fields.insert("name".into(), vchat_core::string_value(name.clone()));
                }
                None => {
                    fields.remove("name");
                }
            }
            if !grant.can_publish {
                fields.insert(
                    VIEWER_TAG.into(),
                    prost_types::Value {
                        kind: Some(Kind::BoolValue(true)),
                    },
                );
            }
        }
        Ok(())
    }

    /// Remembers the identity of the stream's first request.
    fn expect(&self, key: (String, String)) {
        if self
            .claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return;
        }
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(key);
    }

    /// Once the Flow answered a request of the stream without an error, makes
    /// the stream its user's one in its room; takes the frames out of a reply
    /// when the grant does not let the peer subscribe.
    pub(crate) fn reply(&self, reply: &mut Reply) {
        if !reply.is_error() {
            let pending = self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some((room, user)) = pending {
                self.claim(&room, &user);
            }
        }
        if self.grant.as_ref().is_none_or(|g| g.can_subscribe) {
            return;
        }
        for doc in reply.docs.iter_mut().flat_map(|d| d.iter_mut()) {
            doc.content = None;
            doc.mime_type.clear();
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let claimed = self.claimed.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = claimed.take() {
            let mut holders = self
                .access
                .holders
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // A newer stream holds it now: the place is its own.
            if holders.get(&key).is_some_and(|(s, _)| *s == self.serial) {
                holders.remove(&key);
            }
        }
    }
}

/// `inner` until a newer stream of its identity replaces `seat`'s; then one
/// ABORTED status that says so, and the end.
pub(crate) fn until_replaced<S, T>(
    inner: S,
    seat: &Seat,
) -> impl futures::Stream<Item = Result<T, tonic::Status>> + Send + 'static
where
    S: futures::Stream<Item = Result<T, tonic::Status>> + Send + 'static,
    T: Send + 'static,
{
    use futures::StreamExt;
    let ending = seat.ending.clone();
    let end = futures::stream::once(async move {
        ending.token.is_cancelled().then(|| {
            let reason = ending
                .reason
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            Err(tonic::Status::aborted(reason))
        })
    })
    .filter_map(futures::future::ready);
    inner
        .take_until(seat.ending.token.clone().cancelled_owned())
        .chain(end)
}

/// A refused stream's gRPC status.
pub(crate) fn status_of(e: &AuthError) -> tonic::Status {
    match e.denial() {
        vchat_auth::Denial::Unauthenticated => tonic::Status::unauthenticated(e.to_string()),
        vchat_auth::Denial::PermissionDenied => tonic::Status::permission_denied(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_seat_replaces_the_older_and_keeps_its_place_when_the_older_goes() {
        let access = Access::open();
        let creds = |u: &str| Credentials {
            user: Some(u.into()),
            room: Some("r".into()),
            ..Default::default()
        };
        let seat = |u: &str| {
            let s = access.seat(creds(u)).unwrap();
            s.claim("r", u);
            s
        };
        let a = seat("alice");
        let b = seat("alice");
        assert!(a.ending.token.is_cancelled());
        assert_eq!(
            a.replaced_reason(),
            "replaced by a newer connection of alice"
        );
        assert!(!b.ending.token.is_cancelled());
        drop(a);
        assert_eq!(
            access.holders.lock().unwrap().len(),
            1,
            "b still holds alice"
        );
        let c = seat("bob");
        assert!(!b.ending.token.is_cancelled() && !c.ending.token.is_cancelled());
        drop((b, c));
        assert!(access.holders.lock().unwrap().is_empty());
    }
}
