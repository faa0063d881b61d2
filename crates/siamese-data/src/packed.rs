//! Many decoded images kept in one block of memory.
//!
//! Loading both Omniglot sets decodes 32,460 images: 48 MB that are new to the
//! process at a bit per pixel (358 MB at a byte per pixel, as they were kept before).
//! Given an allocation each, that memory is faulted in one 4 KiB page at a time as
//! the decoder writes it; at a byte per pixel that cost about as much as the decoding
//! itself (180k images/s kept that way against 380k/s decoding into reused memory).
//! So a load decodes into one block instead: an anonymous mapping that is faulted in
//! ahead of use, a few MiB per call on every thread (`MADV_POPULATE_WRITE`), and that
//! the images then share ([`GrayImage`] holds it by reference count).
//!
//! Transparent huge pages were measured too and are not used: on this project's
//! virtual machines a fresh 2 MiB page often costs a host-side fault (freed 2 MiB
//! blocks are reported back to the host at once), so faulting in 358 MB took
//! 0.026–0.32 s from run to run, against a steady 0.066–0.073 s with 4 KiB pages
//! populated on two threads and 0.085–0.091 s faulted one by one.

use std::sync::Arc;

use rayon::prelude::*;

use crate::image::{GrayImage, Layout};

/// Blocks smaller than this are plain heap memory.
const MAPPED_MIN_LEN: usize = 2 << 20;

/// Zero-initialised bytes on the heap or in an anonymous mapping.
pub(crate) struct PixelBlock {
    storage: Storage,
}

enum Storage {
    Heap(Box<[u8]>),
    Mapped(memmap2::MmapMut),
}

impl PixelBlock {
    /// `len` zero bytes: mapped (and faulted in ahead, see [`populate`]) when large,
    /// else on the heap, or on the heap whenever mapping fails. `None` when neither
    /// can provide them.
    fn zeroed(len: usize) -> Option<Self> {
        if len >= MAPPED_MIN_LEN
            && let Ok(map) = memmap2::MmapMut::map_anon(len)
        {
            populate(&map);
            return Some(PixelBlock {
                storage: Storage::Mapped(map),
            });
        }
        let mut heap = Vec::new();
        heap.try_reserve_exact(len).ok()?;
        heap.resize(len, 0);
        Some(PixelBlock {
            storage: Storage::Heap(heap.into_boxed_slice()),
        })
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match &self.storage {
            Storage::Heap(b) => b,
            Storage::Mapped(m) => m,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.storage {
            Storage::Heap(b) => b,
            Storage::Mapped(m) => m,
        }
    }
}

/// An image's place in a block: its bytes and the layout they are for.
pub(crate) struct Slot<'a> {
    pub(crate) pixels: &'a mut [u8],
    pub(crate) layout: Layout,
}

/// What a decoder given a [`Slot`] did.
pub(crate) enum Decoded {
    /// It wrote the image into the slot.
    InSlot,
    /// It made a new image (of another layout, or from a path that cannot write in
    /// place).
    Image(GrayImage),
}

/// Faults `map` in ahead of its use, in parallel: one `madvise(MADV_POPULATE_WRITE)`
/// per 4 MiB costs less than a page fault per 4 KiB. Only a hint: where the kernel
/// does not support it (before Linux 5.14, other systems) the pages fault in as they
/// are written.
fn populate(map: &memmap2::MmapMut) {
    #[cfg(target_os = "linux")]
    {
        const CHUNK: usize = 4 << 20;
        let len = map.len();
        (0..len.div_ceil(CHUNK)).into_par_iter().for_each(|k| {
            let start = k * CHUNK;
            let _ = map.advise_range(
                memmap2::Advice::PopulateWrite,
                start,
                CHUNK.min(len - start),
            );
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = map;
}

/// Where one decoded image went.
enum Placed {
    /// Into its slot of the block, in this layout.
    InBlock(Layout),
    /// Elsewhere: its layout was not known beforehand, or was not the expected one.
    Own(GrayImage),
}

/// Decodes `count` images in parallel, in order, into one shared block.
///
/// `layout(i)` is the layout image `i` will have when known beforehand (a PNG's
/// header says it), `None` otherwise; `decode(i, slot)` decodes it, into `slot`
/// (image `i`'s place in the block, when its layout was known) or as a new image. A
/// new image of the slot's layout is copied into it; one whose layout was unknown or
/// turns out different keeps its own memory. The result is always exactly what
/// `decode` gave. The first error (in image order) is returned.
pub(crate) fn decode_packed<E: Send>(
    count: usize,
    layout: impl Fn(usize) -> Option<Layout>,
    decode: impl Fn(usize, Option<Slot<'_>>) -> Result<Decoded, E> + Sync,
) -> Result<Vec<GrayImage>, E> {
    let mut layouts: Vec<Option<Layout>> = (0..count)
        .map(|i| layout(i).filter(|l| l.width > 0 && l.height > 0 && l.checked_len().is_some()))
        .collect();
    let total = layouts
        .iter()
        .flatten()
        .try_fold(0usize, |sum, l| sum.checked_add(l.checked_len()?));
    // Sizes that cannot add up or be allocated (only forged headers say such sizes)
    // get no block: every image then keeps its own memory.
    let mut block = total.and_then(PixelBlock::zeroed);
    if block.is_none() {
        layouts.fill(None);
    }
    let mut slots: Vec<&mut [u8]> = Vec::with_capacity(count);
    let mut starts = Vec::with_capacity(count);
    let mut rest = block.as_mut().map_or(&mut [][..], PixelBlock::as_mut_slice);
    let mut start = 0;
    for l in &layouts {
        let len = l.and_then(Layout::checked_len).unwrap_or(0);
        let (slot, tail) = rest.split_at_mut(len);
        slots.push(slot);
        starts.push(start);
        rest = tail;
        start += len;
    }
    let placed: Vec<Result<Placed, E>> = slots
        .into_par_iter()
        .enumerate()
        .map(|(i, slot)| {
            let Some(layout) = layouts[i] else {
                return match decode(i, None)? {
                    Decoded::Image(image) => Ok(Placed::Own(image)),
                    Decoded::InSlot => unreachable!("decoded into a slot it was not given"),
                };
            };
            let place = Slot {
                pixels: &mut *slot,
                layout,
            };
            Ok(match decode(i, Some(place))? {
                Decoded::InSlot => Placed::InBlock(layout),
                Decoded::Image(image) if image.layout() == layout => {
                    slot.copy_from_slice(image.bytes());
                    Placed::InBlock(layout)
                }
                Decoded::Image(image) => Placed::Own(image),
            })
        })
        .collect();
    // Sequentially, so that the error reported is the first in image order.
    let placed = placed.into_iter().collect::<Result<Vec<Placed>, E>>()?;
    let block = block.map(Arc::new);
    Ok(placed
        .into_iter()
        .zip(starts)
        .map(|(p, start)| match (p, &block) {
            (Placed::InBlock(layout), Some(block)) => {
                GrayImage::in_block(layout, Arc::clone(block), start)
            }
            (Placed::Own(image), _) => image,
            (Placed::InBlock(..), None) => unreachable!("no image is placed without a block"),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(seed: u8, w: usize, h: usize) -> GrayImage {
        let pixels = (0..w * h)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect();
        GrayImage::from_pixels(w, h, pixels).unwrap()
    }

    /// Image `i` of the packing tests: a byte per pixel, or a bit per pixel when `i`
    /// is a multiple of 5; 105 to 107 pixels wide, so that bit rows end mid-byte.
    fn test_image(i: usize) -> GrayImage {
        let (w, h) = (105 + i % 3, 105);
        if i.is_multiple_of(5) {
            let pixels = (0..w * h)
                .map(|p| {
                    if (p * 7 + i).is_multiple_of(3) {
                        255
                    } else {
                        0
                    }
                })
                .collect();
            let image = GrayImage::from_pixels(w, h, pixels)
                .unwrap()
                .to_binary()
                .unwrap();
            assert!(image.is_binary());
            image
        } else {
            image(i as u8, w, h)
        }
    }

    #[test]
    fn packed_images_equal_the_decoded_ones_whatever_the_announced_layouts() {
        // Large enough for a mapped block, with layouts right, unknown, transposed,
        // of another size and of the other form.
        let want: Vec<GrayImage> = (0..300).map(test_image).collect();
        let announced = |i: usize| {
            let right = want[i].layout();
            match i % 7 {
                0 => None,
                1 => Some(Layout {
                    width: right.height,
                    height: right.width,
                    ..right
                }),
                2 => Some(Layout {
                    width: 3,
                    height: 4,
                    binary: false,
                }),
                3 => Some(Layout {
                    binary: !right.binary,
                    ..right
                }),
                _ => Some(right),
            }
        };
        // Odd images are written into their slots when they have one.
        let got = decode_packed(want.len(), announced, |i, slot| {
            Ok::<_, String>(match slot {
                Some(Slot { pixels, layout }) if i % 2 == 1 && layout == want[i].layout() => {
                    pixels.copy_from_slice(want[i].bytes());
                    Decoded::InSlot
                }
                _ => Decoded::Image(want[i].clone()),
            })
        })
        .unwrap();
        assert_eq!(got, want);
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.layout(), w.layout());
        }
        assert!(got[4].is_shared() && got[5].is_shared() && got[5].is_binary());
        assert!(!got[0].is_shared() && !got[2].is_shared() && !got[3].is_shared());
        // Same layout as announced only when not transposed.
        assert_eq!(got[1].is_shared(), want[1].width() == want[1].height());
        // Writing to a shared image copies it; the block and its neighbours stay.
        for i in [4, 5] {
            let mut edited = got[i].clone();
            edited.pixels_mut()[0] ^= 0xff;
            assert_ne!(edited, got[i]);
            assert!(!edited.is_shared() && !edited.is_binary());
        }
        assert_eq!(got[4], want[4]);
        assert_eq!(got[5], want[5]);
        assert_eq!(got[6], want[6]);
    }

    #[test]
    fn the_first_error_in_order_is_returned() {
        let got = decode_packed(
            50,
            |_| {
                Some(Layout {
                    width: 2,
                    height: 2,
                    binary: false,
                })
            },
            |i, _| {
                if i == 17 || i == 33 {
                    Err(i)
                } else {
                    Ok(Decoded::Image(image(0, 2, 2)))
                }
            },
        );
        assert_eq!(got.unwrap_err(), 17);
        let none: Result<Vec<GrayImage>, ()> = decode_packed(0, |_| None, |_, _| unreachable!());
        assert!(none.unwrap().is_empty());
    }

    #[test]
    fn absurd_sizes_get_no_block() {
        let got = decode_packed(
            2,
            |_| {
                Some(Layout {
                    width: usize::MAX / 4,
                    height: 3,
                    binary: false,
                })
            },
            |_, _| Ok::<_, ()>(Decoded::Image(image(1, 1, 1))),
        )
        .unwrap();
        assert_eq!(got, vec![image(1, 1, 1); 2]);
    }
}
