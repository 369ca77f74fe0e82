//! OpenCV for the `vchat-client` binary: webcam and video-file capture, the
//! window, recording ([`cv`]), and the check that a display is there before
//! OpenCV opens a window ([`display`]). Needs OpenCV 4 and libclang to build
//! (Debian: libopencv-dev clang libclang-dev). The network side, frame sources
//! and sinks are in the `vchat-client` library, which has no OpenCV.

pub mod cv;
pub mod display;
