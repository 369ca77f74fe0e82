//! How a post sends (request size, prefetch, parameters) and the callbacks it
//! calls with each response.

use std::collections::BTreeMap;

use vchat_core::Value;

use crate::Response;

/// Jina's default documents per request.
pub const DEFAULT_REQUEST_SIZE: usize = 100;
/// Default requests in flight on one stream.
pub const DEFAULT_PREFETCH: usize = 16;

type Callback = Box<dyn FnMut(&Response) + Send>;

/// How [`Client::post`](crate::Client::post) sends and what it does with each response.
pub struct PostOptions {
    pub(crate) request_size: usize,
    pub(crate) prefetch: usize,
    pub(crate) parameters: BTreeMap<String, Value>,
    pub(crate) on_done: Option<Callback>,
    pub(crate) on_error: Option<Callback>,
    pub(crate) on_always: Option<Callback>,
    pub(crate) live: Option<tokio::sync::watch::Receiver<BTreeMap<String, Value>>>,
    pub(crate) token: Option<String>,
}

impl Default for PostOptions {
    fn default() -> Self {
        PostOptions {
            request_size: DEFAULT_REQUEST_SIZE,
            prefetch: DEFAULT_PREFETCH,
            parameters: BTreeMap::new(),
            on_done: None,
            on_error: None,
            on_always: None,
            live: None,
            token: None,
        }
    }
}

impl PostOptions {
    /// Defaults: `request_size` 100 (as Jina), `prefetch` 16, no parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Documents per request (at least 1); the chat sends 1.
    pub fn request_size(mut self, n: usize) -> Self {
        self.request_size = n.max(1);
        self
    }

    /// The access token of a Flow with access control, sent as the stream's
    /// `authorization: Bearer` metadata (see `vchat token`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into()).filter(|t: &String| !t.is_empty());
        self
    }

    /// Requests in flight at most (at least 1); also sent as `__prefetch__`.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n.max(1);
        self
    }

    /// Parameters sent with every request.
    pub fn parameters(mut self, p: BTreeMap<String, Value>) -> Self {
        self.parameters = p;
        self
    }

    /// Parameters that may change while the stream runs (extra inputs: a slider, a
    /// key press): each request carries the value current when it is sent, over
    /// the fixed [`parameters`](Self::parameters).
    pub fn live_parameters(
        mut self,
        rx: tokio::sync::watch::Receiver<BTreeMap<String, Value>>,
    ) -> Self {
        self.live = Some(rx);
        self
    }

    /// Called with every successful response, as it arrives.
    pub fn on_done(mut self, f: impl FnMut(&Response) + Send + 'static) -> Self {
        self.on_done = Some(Box::new(f));
        self
    }

    /// Called with every response whose status is ERROR.
    pub fn on_error(mut self, f: impl FnMut(&Response) + Send + 'static) -> Self {
        self.on_error = Some(Box::new(f));
        self
    }

    /// Called with every response, after `on_done` or `on_error`.
    pub fn on_always(mut self, f: impl FnMut(&Response) + Send + 'static) -> Self {
        self.on_always = Some(Box::new(f));
        self
    }
}

/// What a finished [`Client::post`](crate::Client::post) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PostSummary {
    /// Responses received.
    pub requests: u64,
    /// Responses received with SUCCESS.
    pub done: u64,
    /// Responses received with ERROR.
    pub errors: u64,
}
