//! The gateway's doors: each turns its transport's messages into
//! [`Request`](vchat_core::Request)s for a [`Session`](crate::Session) and the
//! [`Reply`](vchat_core::Reply)s into messages, and nothing else.
//!
//! | door | module | port |
//! |---|---|---|
//! | gRPC, `jina.JinaRPC/Call` | [`grpc`] | `port` |
//! | WebSocket (the browser page) | [`websocket`] | `port_http` |
//! | WebRTC (the browser page, H.264) | [`webrtc`] | `port_http` (`/whip`), `webrtc.udp_port` |

pub mod grpc;
pub mod webrtc;
pub mod websocket;
