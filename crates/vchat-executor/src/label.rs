//! Names on tiles: each user's display name in a dark box at the bottom-left of
//! their tile, and the "paused" tile of a user whose camera is paused.
//!
//! The text is set in Noto Sans Bold (SIL Open Font License 1.1, see
//! `fonts/OFL.txt`), built into the binary, and rasterized with `ab_glyph`. A
//! name is rasterized once per pixel size into a coverage mask, kept in a cache
//! bounded in bytes; drawing a label is then one pass over its box.
//!
//! Names come from peers: any UTF-8 is drawn (a character the font lacks is
//! drawn as the font's missing-glyph box, a control character is skipped), at
//! most [`MAX_LABEL_CHARS`] characters, clipped to the tile. Nothing here panics
//! or allocates more than a mask of a bounded size.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};

use crate::surface::{Paint, Surface};

/// The font of the labels: Noto Sans Bold, SIL Open Font License 1.1.
pub const FONT: &[u8] = include_bytes!("../fonts/NotoSans-Bold.ttf");
/// Most characters of a name drawn; a longer name ends with `…`.
pub const MAX_LABEL_CHARS: usize = 32;
/// Smallest text size of a label, in pixels: below it text is not legible.
pub const MIN_LABEL_PX: u32 = 14;
/// Largest text size of a label, in pixels.
pub const MAX_LABEL_PX: u32 = 48;
/// Default bytes of rasterized names kept (`label_cache_bytes`).
pub const DEFAULT_LABEL_CACHE_BYTES: usize = 1 << 20;
/// The word on a paused tile.
pub const PAUSED_TEXT: &str = "paused";
/// The side (width in the vertical layout, height in the horizontal one) of a
/// room opened by a paused user, whose stand-in frame may be tiny, at least.
pub const PAUSED_MIN_SIDE: usize = 320;
/// Colour of a paused tile, BGR.
pub const PAUSED_BGR: [u8; 3] = [48, 40, 40];

fn font() -> Option<&'static FontRef<'static>> {
    static FONT_REF: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT_REF
        .get_or_init(|| FontRef::try_from_slice(FONT).ok())
        .as_ref()
}

/// The text size of the label of a tile `tile_h` pixels high: a twelfth of
/// it, within [`MIN_LABEL_PX`]..=[`MAX_LABEL_PX`].
pub fn label_px(tile_h: usize) -> u32 {
    u32::try_from(tile_h / 12)
        .unwrap_or(u32::MAX)
        .clamp(MIN_LABEL_PX, MAX_LABEL_PX)
}

/// The padding around a label's text, and its margin from the tile's edges,
/// at text size `px`.
pub fn label_pad(px: u32) -> usize {
    (px as usize / 5).max(2)
}

/// `name` as drawn: control characters out, at most [`MAX_LABEL_CHARS`]
/// characters, the last one `…` when it was cut.
pub fn shown(name: &str) -> String {
    let mut chars = name.chars().filter(|c| !c.is_control());
    let mut out: String = chars.by_ref().take(MAX_LABEL_CHARS).collect();
    if chars.next().is_some() {
        out.pop();
        out.push('…');
    }
    out
}

/// The coverage of a line of text: `width`×`height` bytes, 0 (none) to 255.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    /// Columns.
    pub width: usize,
    /// Rows: the font's ascent to descent at the text size.
    pub height: usize,
    /// Row by row.
    pub coverage: Vec<u8>,
}

/// Rasterizes `text` (drawn as given: see [`shown`]) at `px` pixels. At most
/// [`MAX_LABEL_CHARS`] characters at [`MAX_LABEL_PX`] make a mask of a few
/// tens of kilobytes; `None` only if the built-in font does not parse.
pub fn render(text: &str, px: u32) -> Option<Mask> {
    let font = font()?;
    let px = px.clamp(1, MAX_LABEL_PX) as f32;
    let scaled = font.as_scaled(PxScale::from(px));
    let ascent = scaled.ascent();
    let height = (ascent - scaled.descent()).ceil().max(1.0) as usize;
    let mut glyphs = Vec::new();
    let mut x = 0.0f32;
    let mut prev = None;
    for c in text.chars().take(MAX_LABEL_CHARS) {
        let id = font.glyph_id(c);
        if let Some(p) = prev {
            x += scaled.kern(p, id);
        }
        glyphs.push(id.with_scale_and_position(px, point(x, ascent)));
        x += scaled.h_advance(id);
        prev = Some(id);
    }
    let width = x.ceil().max(1.0) as usize;
    let mut coverage = vec![0u8; width * height];
    for g in glyphs {
        let Some(outline) = font.outline_glyph(g) else {
            continue;
        };
        let b = outline.px_bounds();
        outline.draw(|gx, gy, c| {
            let (x, y) = (b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64);
            if (0..width as i64).contains(&x) && (0..height as i64).contains(&y) {
                let p = &mut coverage[y as usize * width + x as usize];
                *p = (*p).max((c.clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        });
    }
    Some(Mask {
        width,
        height,
        coverage,
    })
}

struct Entry {
    mask: Arc<Mask>,
    used: u64,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<(String, u32), Entry>,
    bytes: usize,
    tick: u64,
}

/// Draws labels, with the masks of the names it drew kept up to `max_bytes`
/// (least recently used out first).
pub struct Labeller {
    max_bytes: usize,
    cache: Mutex<Cache>,
}

impl Labeller {
    /// A labeller keeping at most `max_bytes` of rasterized names.
    pub fn new(max_bytes: usize) -> Self {
        Labeller {
            max_bytes,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The mask of `text` at `px`, from the cache or rasterized (and kept when
    /// it fits).
    pub fn mask(&self, text: &str, px: u32) -> Option<Arc<Mask>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.tick += 1;
        let tick = cache.tick;
        let key = (text.to_string(), px);
        if let Some(e) = cache.entries.get_mut(&key) {
            e.used = tick;
            return Some(e.mask.clone());
        }
        let mask = Arc::new(render(text, px)?);
        let size = mask.coverage.len() + key.0.len();
        if size > self.max_bytes {
            return Some(mask);
        }
        while cache.bytes + size > self.max_bytes {
            let Some(oldest) = cache
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = cache.entries.remove(&oldest) {
                cache.bytes -= e.mask.coverage.len() + oldest.0.len();
            }
        }
        cache.bytes += size;
        cache.entries.insert(
            key,
            Entry {
                mask: mask.clone(),
                used: tick,
            },
        );
        Some(mask)
    }

    /// Bytes of masks kept.
    pub fn cached_bytes(&self) -> usize {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }

    /// Draws `name`, if any, at the bottom-left of the tile `(top, left, height,
    /// width)` of `canvas`: white text on a dark, half-transparent box, clipped
    /// to the tile. A tile too low for the box gets no label. With `paused`,
    /// the tile is first filled with [`PAUSED_BGR`] and [`PAUSED_TEXT`]
    /// written in its middle.
    pub fn draw(
        &self,
        canvas: &mut impl Surface,
        tile: (usize, usize, usize, usize),
        name: Option<&str>,
        paused: bool,
    ) {
        let Some(tile) = clip(canvas.size(), tile) else {
            return;
        };
        let (top, left, h, w) = tile;
        let px = label_px(h);
        let pad = label_pad(px);
        if paused {
            for y in top..top + h {
                canvas.paint(y, left, left + w, Paint::Fill(PAUSED_BGR));
            }
            if let Some(m) = self.mask(PAUSED_TEXT, px) {
                let y = top + h.saturating_sub(m.height) / 2;
                let x = left + w.saturating_sub(m.width) / 2;
                blit(canvas, tile, (y, x), &m, 200);
            }
        }
        let Some(name) = name else {
            return;
        };
        let text = shown(name);
        if text.is_empty() {
            return;
        }
        let Some(m) = self.mask(&text, px) else {
            return;
        };
        let box_h = m.height + 2 * pad;
        if h < box_h + 2 * pad {
            return;
        }
        let box_top = top + h - pad - box_h;
        let box_left = left + pad;
        let box_right = (box_left + m.width + 2 * pad).min(left + w);
        for y in box_top..box_top + box_h {
            canvas.paint(y, box_left, box_right, Paint::Darken);
        }
        blit(canvas, tile, (box_top + pad, box_left + pad), &m, 255);
    }
}

/// The part of `tile` within a canvas of `(height, width)`.
fn clip(
    (frame_h, frame_w): (usize, usize),
    (top, left, h, w): (usize, usize, usize, usize),
) -> Option<(usize, usize, usize, usize)> {
    let (bottom, right) = (
        top.saturating_add(h).min(frame_h),
        left.saturating_add(w).min(frame_w),
    );
    (top < bottom && left < right).then(|| (top, left, bottom - top, right - left))
}

/// Blends `mask` in `white` over the canvas at `(y, x)`, within `tile`.
fn blit(
    canvas: &mut impl Surface,
    tile: (usize, usize, usize, usize),
    at: (usize, usize),
    mask: &Mask,
    white: u8,
) {
    let text = (at.0, at.1, mask.height, mask.width);
    canvas.ink(tile, text, &|y, x| coverage(mask, at, (y, x)), white);
}

/// The coverage of `mask`, drawn at `(y0, x0)`, at the pixel `(y, x)`.
fn coverage(mask: &Mask, (y0, x0): (usize, usize), (y, x): (usize, usize)) -> u8 {
    match (y.checked_sub(y0), x.checked_sub(x0)) {
        (Some(my), Some(mx)) if my < mask.height && mx < mask.width => {
            mask.coverage[my * mask.width + mx]
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::surface::Bgr;

    #[test]
    fn the_font_parses_and_renders() {
        let m = render("alice", 20).unwrap();
        assert!(m.width > 20 && m.height >= 20, "{}x{}", m.width, m.height);
        assert!(m.coverage.contains(&255));
        let b = render("bob", 20).unwrap();
        assert!(b.width < m.width);
    }

    #[test]
    fn any_utf8_renders_without_panicking() {
        for name in ["é名前🙂", "\u{0}\n\t", "\u{10FFFF}", "اسم", "", " "] {
            let m = render(&shown(name), 16).unwrap();
            assert_eq!(m.coverage.len(), m.width * m.height);
        }
        let long = "w".repeat(10_000);
        let s = shown(&long);
        assert_eq!(s.chars().count(), MAX_LABEL_CHARS);
        assert!(s.ends_with('…'));
        assert_eq!(shown("a\nb"), "ab");
    }

    #[test]
    fn labels_are_drawn_bottom_left_and_clipped() {
        let l = Labeller::new(DEFAULT_LABEL_CACHE_BYTES);
        let (h, w) = (240, 320);
        let mut frame = vec![100u8; h * w * 3];
        l.draw(
            &mut Bgr::new(&mut frame, w),
            (0, 0, h, w),
            Some("alice"),
            false,
        );
        let px = |y: usize, x: usize| frame[(y * w + x) * 3];
        // White text in the bottom-left, a dark box around it, the rest untouched.
        let bright = (h - 40..h).flat_map(|y| (0..100).map(move |x| (y, x)));
        let n = bright.filter(|&(y, x)| px(y, x) >= 200).count();
        assert!(n > 20, "{n}");
        assert_eq!(px(h - 5, 4), 40, "the box darkens");
        assert_eq!(px(h - 2, 1), 100, "a margin below and left of it");
        assert_eq!(px(0, 0), 100);
        assert_eq!(px(h - 3, w - 3), 100);
        // Tiles of any size and position: clipped, never a panic.
        for tile in [
            (0, 0, 1, 1),
            (230, 310, 100, 100),
            (usize::MAX, 0, 5, 5),
            (0, 0, 0, 0),
        ] {
            l.draw(
                &mut Bgr::new(&mut frame, w),
                tile,
                Some("a long name of someone"),
                true,
            );
        }
        l.draw(
            &mut Bgr::new(&mut frame, 0),
            (0, 0, 10, 10),
            Some("x"),
            false,
        );
        l.draw(&mut Bgr::new(&mut [], 7), (0, 0, 10, 10), Some("x"), false);
    }

    #[test]
    fn a_paused_tile_is_dark_with_the_word_and_the_name() {
        let l = Labeller::new(DEFAULT_LABEL_CACHE_BYTES);
        let (h, w) = (240, 320);
        let mut frame = vec![100u8; h * w * 3];
        l.draw(
            &mut Bgr::new(&mut frame, w),
            (0, 0, h, w),
            Some("bob"),
            true,
        );
        assert_eq!(&frame[..3], &PAUSED_BGR);
        let middle =
            (h / 2 - 10..h / 2 + 10).flat_map(|y| (w / 2 - 30..w / 2 + 30).map(move |x| (y, x)));
        assert!(
            middle
                .filter(|&(y, x)| frame[(y * w + x) * 3] >= 150)
                .count()
                > 20
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let l = Labeller::new(4096);
        for i in 0..100 {
            assert!(l.mask(&format!("user {i}"), 14).is_some());
            assert!(l.cached_bytes() <= 4096);
        }
        // Repeated names come from the cache: the same mask.
        let a = l.mask("zed", 14).unwrap();
        assert!(Arc::ptr_eq(&a, &l.mask("zed", 14).unwrap()));
        let none = Labeller::new(0);
        assert!(none.mask("x", 14).is_some());
        assert_eq!(none.cached_bytes(), 0);
    }
}
