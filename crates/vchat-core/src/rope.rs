//! Bytes kept as the pieces they were put together from.
//!
//! A vertical mosaic is its users' frames one after the other: as a [`Rope`] of
//! those frames it costs a list of references, not a copy of every pixel. The
//! gRPC door writes a rope's pieces to the socket as they are (see
//! [`crate::wire`]); whoever needs the bytes in one piece (a JPEG encoder, a
//! JSON body) asks for [`Rope::contiguous`], which joins them once and keeps
//! the result for every clone of the rope.

use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};

/// Bytes as a sequence of [`Bytes`] pieces, cheap to clone.
#[derive(Clone, Default)]
pub struct Rope {
    pieces: Arc<[Bytes]>,
    len: usize,
    /// The pieces joined, once someone needed them in one buffer.
    joined: Arc<OnceLock<Bytes>>,
}

impl Rope {
    /// The pieces in order (empty ones dropped), or `None` when their total
    /// length overflows `usize`.
    pub fn from_pieces(pieces: Vec<Bytes>) -> Option<Self> {
        let pieces: Vec<Bytes> = pieces.into_iter().filter(|p| !p.is_empty()).collect();
        let len = pieces
            .iter()
            .try_fold(0usize, |acc, p| acc.checked_add(p.len()))?;
        Some(Rope {
            pieces: pieces.into(),
            len,
            joined: Arc::default(),
        })
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pieces, in order, none empty.
    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// Whether the bytes are already in one buffer (so [`Rope::contiguous`]
    /// copies nothing).
    pub fn is_contiguous(&self) -> bool {
        self.pieces.len() <= 1 || self.joined.get().is_some()
    }

    /// The bytes in one buffer: the single piece itself, or the pieces joined
    /// (copied once; every clone of this rope shares the result).
    pub fn contiguous(&self) -> &Bytes {
        match &self.pieces[..] {
            [one] => one,
            _ => self.joined.get_or_init(|| {
                let mut out = BytesMut::with_capacity(self.len);
                for p in self.pieces.iter() {
                    out.extend_from_slice(p);
                }
                out.freeze()
            }),
        }
    }

    /// The bytes in one buffer, by value (see [`Rope::contiguous`]).
    pub fn into_contiguous(self) -> Bytes {
        self.contiguous().clone()
    }

    /// Whether the bytes equal `other`'s, compared piece by piece without
    /// joining either.
    fn same_bytes(&self, other: &Rope) -> bool {
        if self.len != other.len {
            return false;
        }
        let mut a = self.pieces.iter().map(|p| &p[..]);
        let mut b = other.pieces.iter().map(|p| &p[..]);
        let (mut x, mut y): (&[u8], &[u8]) = (&[], &[]);
        loop {
            if x.is_empty() {
                x = a.next().unwrap_or(&[]);
            }
            if y.is_empty() {
                y = b.next().unwrap_or(&[]);
            }
            if x.is_empty() || y.is_empty() {
                return x.is_empty() && y.is_empty();
            }
            let n = x.len().min(y.len());
            if x[..n] != y[..n] {
                return false;
            }
            x = &x[n..];
            y = &y[n..];
        }
    }
}

impl From<Bytes> for Rope {
    fn from(bytes: Bytes) -> Self {
        let len = bytes.len();
        let pieces: Arc<[Bytes]> = if bytes.is_empty() {
            Arc::new([])
        } else {
            Arc::new([bytes])
        };
        Rope {
            pieces,
            len,
            joined: Arc::default(),
        }
    }
}

impl PartialEq for Rope {
    fn eq(&self, other: &Rope) -> bool {
        self.same_bytes(other)
    }
}

impl Eq for Rope {}

impl std::fmt::Debug for Rope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rope")
            .field("len", &self.len)
            .field("pieces", &self.pieces.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    #[test]
    fn joins_once_and_shares_the_join_between_clones() {
        let r = Rope::from_pieces(vec![b(b"ab"), Bytes::new(), b(b"cde")]).unwrap();
        assert_eq!(
            (r.len(), r.pieces().len(), r.is_contiguous()),
            (5, 2, false)
        );
        let c = r.clone();
        assert_eq!(&r.contiguous()[..], b"abcde");
        assert!(c.is_contiguous());
        assert_eq!(c.contiguous().as_ptr(), r.contiguous().as_ptr());
    }

    #[test]
    fn a_single_piece_is_never_copied() {
        let one = b(b"xyz");
        let r = Rope::from(one.clone());
        assert!(r.is_contiguous());
        assert_eq!(r.contiguous().as_ptr(), one.as_ptr());
        let r = Rope::from_pieces(vec![Bytes::new(), one.clone()]).unwrap();
        assert_eq!(r.into_contiguous().as_ptr(), one.as_ptr());
        assert!(Rope::from(Bytes::new()).is_empty());
        assert_eq!(Rope::from(Bytes::new()).contiguous().len(), 0);
    }

    #[test]
    fn equality_is_by_content_whatever_the_pieces() {
        let a = Rope::from_pieces(vec![b(b"ab"), b(b"cd"), b(b"e")]).unwrap();
        let c = Rope::from_pieces(vec![b(b"a"), b(b"bcde")]).unwrap();
        assert_eq!(a, c);
        assert_eq!(a, Rope::from(b(b"abcde")));
        assert_ne!(a, Rope::from(b(b"abcdf")));
        assert_ne!(a, Rope::from(b(b"abcd")));
        assert_eq!(Rope::default(), Rope::from(Bytes::new()));
    }
}
