//! n-dimensional arrays as docarray sends them: a dtype, a shape and a C-order buffer.

use bytes::Bytes;
use ndarray::{Array3, ArrayView3};
use vchat_proto::docarray::{DenseNdArrayProto, NdArrayProto, nd_array_proto};

use crate::Error;
use crate::rope::Rope;

/// Element type of a [`Tensor`], named as numpy names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// `bool`, `|b1`
    Bool,
    /// `uint8`, `|u1`: video frames.
    U8,
    /// `int8`, `|i1`
    I8,
    /// `uint16`, `<u2`
    U16,
    /// `int16`, `<i2`
    I16,
    /// `uint32`, `<u4`
    U32,
    /// `int32`, `<i4`
    I32,
    /// `uint64`, `<u8`
    U64,
    /// `int64`, `<i8`
    I64,
    /// `float16`, `<f2`
    F16,
    /// `float32`, `<f4`
    F32,
    /// `float64`, `<f8`
    F64,
}

impl DType {
    /// Bytes per element.
    pub fn itemsize(self) -> usize {
        match self {
            DType::Bool | DType::U8 | DType::I8 => 1,
            DType::U16 | DType::I16 | DType::F16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 => 8,
        }
    }

    /// Parses a numpy type string (`"|u1"`, `"<f4"`, `">i2"`) or a numpy type name
    /// (`"uint8"`, `"float32"`). The byte order is checked separately, see
    /// [`Tensor::from_proto`].
    pub fn parse(s: &str) -> Option<DType> {
        let code = s.trim_start_matches(['|', '<', '>', '=']);
        Some(match code {
            "b1" | "bool" | "?" => DType::Bool,
            "u1" | "uint8" | "B" => DType::U8,
            "i1" | "int8" | "b" => DType::I8,
            "u2" | "uint16" => DType::U16,
            "i2" | "int16" => DType::I16,
            "u4" | "uint32" => DType::U32,
            "i4" | "int32" => DType::I32,
            "u8" | "uint64" => DType::U64,
            "i8" | "int64" => DType::I64,
            "f2" | "float16" => DType::F16,
            "f4" | "float32" => DType::F32,
            "f8" | "float64" => DType::F64,
            _ => return None,
        })
    }

    /// The numpy type string docarray writes: `"|u1"`, `"<f4"`, ...
    pub fn numpy_str(self) -> &'static str {
        match self {
            DType::Bool => "|b1",
            DType::U8 => "|u1",
            DType::I8 => "|i1",
            DType::U16 => "<u2",
            DType::I16 => "<i2",
            DType::U32 => "<u4",
            DType::I32 => "<i4",
            DType::U64 => "<u8",
            DType::I64 => "<i8",
            DType::F16 => "<f2",
            DType::F32 => "<f4",
            DType::F64 => "<f8",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            DType::Bool => "bool",
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::U16 => "uint16",
            DType::I16 => "int16",
            DType::U32 => "uint32",
            DType::I32 => "int32",
            DType::U64 => "uint64",
            DType::I64 => "int64",
            DType::F16 => "float16",
            DType::F32 => "float32",
            DType::F64 => "float64",
        };
        f.write_str(name)
    }
}

/// A dense n-dimensional array whose buffer length always matches its shape and dtype.
///
/// The buffer is a [`Rope`] of [`Bytes`]: cloning a tensor, slicing it out of a
/// received message or putting it together from other buffers never copies
/// pixels. Multi-byte elements are little-endian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: Rope,
}

impl Tensor {
    /// A tensor over `data`, or [`Error::BadRequest`] when
    /// `data.len() != product(shape) * dtype.itemsize()`.
    pub fn new(dtype: DType, shape: Vec<usize>, data: Bytes) -> Result<Self, Error> {
        Tensor::from_rope(dtype, shape, Rope::from(data))
    }

    /// A tensor over the bytes of `data` in order (see [`Tensor::new`]): a
    /// buffer put together from others without copying them.
    pub fn from_rope(dtype: DType, shape: Vec<usize>, data: Rope) -> Result<Self, Error> {
        // The wire carries dimensions as uint32: a larger one would be sent
        // truncated, as another shape (an empty tensor may have any dimension).
        if shape.iter().any(|&d| u32::try_from(d).is_err()) {
            return Err(Error::BadRequest(format!(
                "tensor shape {shape:?} is too large: a dimension is over {}",
                u32::MAX
            )));
        }
        let expected = shape
            .iter()
            .try_fold(dtype.itemsize(), |acc, &d| acc.checked_mul(d));
        match expected {
            Some(n) if n == data.len() => Ok(Tensor { dtype, shape, data }),
            Some(n) => Err(Error::BadRequest(format!(
                "tensor buffer is {} bytes but shape {:?} of {} needs {}",
                data.len(),
                shape,
                dtype,
                n
            ))),
            None => Err(Error::BadRequest(format!(
                "tensor shape {shape:?} is too large"
            ))),
        }
    }

    /// An H×W×C uint8 image in C order (OpenCV's BGR layout for C = 3).
    pub fn image(height: usize, width: usize, channels: usize, data: Bytes) -> Result<Self, Error> {
        Tensor::new(DType::U8, vec![height, width, channels], data)
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Dimensions, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The C-order buffer in one piece: no copy, unless the tensor was put
    /// together from pieces ([`Tensor::from_rope`]), which are then joined once.
    pub fn data(&self) -> &Bytes {
        self.data.contiguous()
    }

    /// The C-order buffer, by value (see [`Tensor::data`]).
    pub fn into_data(self) -> Bytes {
        self.data.into_contiguous()
    }

    /// The C-order buffer as the pieces it was put together from.
    pub fn rope(&self) -> &Rope {
        &self.data
    }

    /// `(height, width)` when this is an H×W×3 uint8 image, else a message saying
    /// what it is instead.
    pub fn frame_dims(&self) -> Result<(usize, usize), String> {
        if self.dtype != DType::U8 {
            return Err(format!(
                "frame dtype must be uint8, got {} (shape {:?})",
                self.dtype, self.shape
            ));
        }
        match self.shape[..] {
            [h, w, 3] if h > 0 && w > 0 => Ok((h, w)),
            _ => Err(format!(
                "frame shape must be [height, width, 3], got {:?}",
                self.shape
            )),
        }
    }

    /// This uint8 H×W×C image as an array view of its buffer, without a copy: what
    /// a Jina executor gets as a numpy array. An error names the dtype or shape
    /// when this is not a uint8 image with three non-empty dimensions.
    pub fn image_view(&self) -> Result<ArrayView3<'_, u8>, Error> {
        if self.dtype != DType::U8 {
            return Err(Error::BadRequest(format!(
                "an image array must be uint8, got {} (shape {:?})",
                self.dtype, self.shape
            )));
        }
        image_view(self.data.contiguous(), &self.shape)
    }

    /// A uint8 H×W×C image from an array. An array in standard (C) layout hands
    /// over its buffer without a copy; any other layout is copied once, in C
    /// order.
    pub fn from_array(array: Array3<u8>) -> Result<Self, Error> {
        let shape = array.shape().to_vec();
        let len = array.len();
        let data = if array.is_standard_layout() {
            // Standard layout: the elements are `len` consecutive values of the
            // buffer from the first one on.
            let (mut buffer, offset) = array.into_raw_vec_and_offset();
            let offset = offset.unwrap_or(0);
            if offset > 0 {
                buffer.drain(..offset);
            }
            buffer.truncate(len);
            buffer
        } else {
            array.iter().copied().collect()
        };
        Tensor::new(DType::U8, shape, Bytes::from(data))
    }

    /// Reads a docarray `NdArrayProto`, validating the buffer against shape and dtype.
    pub fn from_proto(proto: NdArrayProto) -> Result<Self, Error> {
        let dense = match proto.content {
            Some(nd_array_proto::Content::Dense(d)) => d,
            Some(nd_array_proto::Content::Sparse(_)) => {
                return Err(Error::BadRequest(
                    "sparse tensors are not supported".to_string(),
                ));
            }
            None => return Err(Error::BadRequest("tensor has no content".to_string())),
        };
        let dtype = DType::parse(&dense.dtype)
            .ok_or_else(|| Error::BadRequest(format!("unknown tensor dtype {:?}", dense.dtype)))?;
        if dense.dtype.starts_with('>') && dtype.itemsize() > 1 {
            return Err(Error::BadRequest(format!(
                "big-endian tensors ({:?}) are not supported",
                dense.dtype
            )));
        }
        let shape = dense.shape.iter().map(|&d| d as usize).collect();
        Tensor::new(dtype, shape, dense.buffer)
    }

    /// The docarray `NdArrayProto` of this tensor (`cls_name: "numpy"`).
    pub fn into_proto(self) -> NdArrayProto {
        NdArrayProto {
            content: Some(nd_array_proto::Content::Dense(DenseNdArrayProto {
                buffer: self.data.into_contiguous(),
                // Lossless: `Tensor::new` refuses dimensions over u32::MAX.
                shape: self.shape.iter().map(|&d| d as u32).collect(),
                dtype: self.dtype.numpy_str().to_string(),
            })),
            cls_name: "numpy".to_string(),
            parameters: None,
        }
    }
}

/// `data` as a C-order array of `shape` (height, width, channels), checked: three
/// non-empty dimensions whose product is the buffer's length.
fn image_view<'a>(data: &'a [u8], shape: &[usize]) -> Result<ArrayView3<'a, u8>, Error> {
    let &[height, width, channels] = shape else {
        return Err(Error::BadRequest(format!(
            "an image array is [height, width, channels], got shape {shape:?}"
        )));
    };
    let needed = height
        .checked_mul(width)
        .and_then(|px| px.checked_mul(channels));
    match needed {
        Some(0) => Err(Error::BadRequest(format!(
            "an image array has no pixels: shape {shape:?}"
        ))),
        Some(n) if n == data.len() => ArrayView3::from_shape((height, width, channels), data)
            .map_err(|e| Error::BadRequest(format!("image array of shape {shape:?}: {e}"))),
        Some(n) => Err(Error::BadRequest(format!(
            "an image array of shape {shape:?} needs {n} bytes, got {}",
            data.len()
        ))),
        None => Err(Error::BadRequest(format!(
            "image array shape {shape:?} is too large"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_buffer_length() {
        assert!(Tensor::image(2, 3, 3, Bytes::from(vec![0u8; 18])).is_ok());
        let err = Tensor::image(2, 3, 3, Bytes::from(vec![0u8; 17])).unwrap_err();
        assert!(err.to_string().contains("17 bytes"), "{err}");
        let err = Tensor::new(DType::U8, vec![usize::MAX, 2], Bytes::new()).unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }

    #[test]
    fn parses_numpy_type_strings() {
        assert_eq!(DType::parse("|u1"), Some(DType::U8));
        assert_eq!(DType::parse("uint8"), Some(DType::U8));
        assert_eq!(DType::parse("<f4"), Some(DType::F32));
        assert_eq!(DType::parse("<U4"), None);
        assert_eq!(DType::F32.numpy_str(), "<f4");
    }

    #[test]
    fn proto_round_trip_shares_the_buffer() {
        let data = Bytes::from(vec![7u8; 2 * 2 * 3]);
        let t = Tensor::image(2, 2, 3, data.clone()).unwrap();
        let back = Tensor::from_proto(t.clone().into_proto()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.data().as_ptr(), data.as_ptr());
    }

    #[test]
    fn frame_dims_names_what_is_wrong() {
        let gray = Tensor::image(2, 2, 1, Bytes::from(vec![0u8; 4])).unwrap();
        assert!(gray.frame_dims().unwrap_err().contains("[2, 2, 1]"));
        let f = Tensor::new(DType::F32, vec![1, 1, 3], Bytes::from(vec![0u8; 12])).unwrap();
        assert!(f.frame_dims().unwrap_err().contains("float32"));
    }

    #[test]
    fn image_view_is_the_frame_without_a_copy() {
        let data: Vec<u8> = (0..2 * 3 * 3).map(|v| v as u8 * 7).collect();
        let data = Bytes::from(data);
        let t = Tensor::image(2, 3, 3, data.clone()).unwrap();
        let view = t.image_view().unwrap();
        assert_eq!(view.dim(), (2, 3, 3));
        assert_eq!(view.as_ptr(), data.as_ptr(), "a view, not a copy");
        for ((y, x, c), &v) in view.indexed_iter() {
            assert_eq!(v, data[(y * 3 + x) * 3 + c], "[{y}, {x}, {c}]");
        }
        let gray = Tensor::image(2, 2, 1, Bytes::from(vec![9u8; 4])).unwrap();
        assert_eq!(gray.image_view().unwrap().dim(), (2, 2, 1));
    }

    #[test]
    fn image_view_of_another_dtype_shape_or_length_is_an_error() {
        let f = Tensor::new(DType::F32, vec![1, 1, 3], Bytes::from(vec![0u8; 12])).unwrap();
        assert!(f.image_view().unwrap_err().to_string().contains("float32"));
        let flat = Tensor::new(DType::U8, vec![12], Bytes::from(vec![0u8; 12])).unwrap();
        let err = flat.image_view().unwrap_err().to_string();
        assert!(err.contains("[height, width, channels]"), "{err}");
        let four = Tensor::new(DType::U8, vec![1, 1, 1, 3], Bytes::from(vec![0u8; 3])).unwrap();
        assert!(four.image_view().is_err());
        let empty = Tensor::new(DType::U8, vec![0, 4, 3], Bytes::new()).unwrap();
        let err = empty.image_view().unwrap_err().to_string();
        assert!(err.contains("no pixels"), "{err}");
        // A buffer shorter or longer than its shape, and a shape past usize.
        let err = image_view(&[0u8; 17], &[2, 3, 3]).unwrap_err().to_string();
        assert!(err.contains("needs 18 bytes, got 17"), "{err}");
        assert!(image_view(&[0u8; 19], &[2, 3, 3]).is_err());
        let err = image_view(&[], &[usize::MAX, 2, 3]).unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }

    #[test]
    fn from_array_takes_a_standard_buffer_and_copies_any_other_once() {
        let a = Array3::from_shape_fn((2, 3, 3), |(y, x, c)| (y * 9 + x * 3 + c) as u8);
        let ptr = a.as_ptr();
        let t = Tensor::from_array(a).unwrap();
        assert_eq!(t.shape(), [2, 3, 3]);
        assert_eq!(t.dtype(), DType::U8);
        assert_eq!(t.data().as_ptr(), ptr, "the array's buffer, not a copy");
        assert_eq!(&t.data()[..4], &[0, 1, 2, 3]);
        // Round trip: view, owned array, tensor.
        let back = Tensor::from_array(t.image_view().unwrap().to_owned()).unwrap();
        assert_eq!(back, t);
        // Transposed (not standard layout): the same image, in C order.
        let mut swapped = t.image_view().unwrap().to_owned();
        swapped.swap_axes(0, 1);
        let s = Tensor::from_array(swapped).unwrap();
        assert_eq!(s.shape(), [3, 2, 3]);
        let v = s.image_view().unwrap();
        assert_eq!(v[[2, 1, 0]], t.image_view().unwrap()[[1, 2, 0]]);
        assert_eq!(&s.data()[..3], &[0, 1, 2]);
        assert_eq!(&s.data()[3..6], &[9, 10, 11]);
        // A slice of a larger array (standard layout, an offset into its buffer).
        let big = Array3::from_shape_fn((4, 3, 3), |(y, x, c)| (y * 9 + x * 3 + c) as u8);
        let rows = big.slice_move(ndarray::s![2.., .., ..]);
        let r = Tensor::from_array(rows).unwrap();
        assert_eq!(r.shape(), [2, 3, 3]);
        assert_eq!(r.data()[0], 18);
        assert_eq!(r.data().len(), 18);
    }

    #[test]
    fn rejects_big_endian_and_sparse() {
        let mut p = Tensor::new(DType::U16, vec![1], Bytes::from(vec![0u8; 2]))
            .unwrap()
            .into_proto();
        if let Some(nd_array_proto::Content::Dense(d)) = &mut p.content {
            d.dtype = ">u2".into();
        }
        assert!(Tensor::from_proto(p).is_err());
    }
}
