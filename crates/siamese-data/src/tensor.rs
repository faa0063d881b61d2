//! Batches of images as candle tensors of shape `(n, 1, height, width)`, ink = 1.0.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::DataError;
use crate::augment::{KochDistortion, image_rng, warp_into};
use crate::image::GrayImage;
use crate::index::Dataset;
use crate::sample::{Episode, PairEntry};

/// The two sides of a batch of pairs and their targets (1.0 same, 0.0 different).
#[derive(Debug, Clone)]
pub struct PairBatch {
    /// `(n, 1, h, w)`
    pub left: Tensor,
    /// `(n, 1, h, w)`
    pub right: Tensor,
    /// `(n,)`
    pub targets: Tensor,
}

/// Builds the tensors of a batch of pair entries: an entry with a distortion seed has
/// each of its two images warped by its own transform, drawn from `distortion` with
/// [`image_rng`]`(seed, 0)` and `(seed, 1)`; an entry without one is used as is. Done
/// in parallel; the result depends only on the entries.
pub fn pair_batch(
    data: &Dataset,
    entries: &[PairEntry],
    distortion: &KochDistortion,
    device: &Device,
) -> Result<PairBatch, DataError> {
    distortion
        .validate()
        .map_err(|e| DataError::Invalid(e.to_string()))?;
    let Some(first) = entries.first() else {
        return Err(DataError::Invalid("cannot make a batch of no pairs".into()));
    };
    let (w, h) = {
        let img = data.image(first.pair.a);
        (img.width(), img.height())
    };
    let len = w * h;
    let mut left = vec![0f32; entries.len() * len];
    let mut right = vec![0f32; entries.len() * len];
    let sized = |i: usize| -> Result<&GrayImage, DataError> {
        let img = data.image(i);
        if (img.width(), img.height()) != (w, h) {
            return Err(DataError::Invalid(format!(
                "{} is {}×{}, the batch is {w}×{h}",
                data.index().images()[i].path.display(),
                img.width(),
                img.height()
            )));
        }
        Ok(img)
    };
    left.par_chunks_mut(len)
        .zip(right.par_chunks_mut(len))
        .zip(entries.par_iter())
        .try_for_each(|((l, r), entry)| -> Result<(), DataError> {
            let (a, b) = (sized(entry.pair.a)?, sized(entry.pair.b)?);
            match entry.distortion_seed {
                Some(seed) => {
                    warp_into(a, &distortion.sample(&mut image_rng(seed, 0)), l);
                    warp_into(b, &distortion.sample(&mut image_rng(seed, 1)), r);
                }
                None => {
                    a.write_f32(l);
                    b.write_f32(r);
                }
            }
            Ok(())
        })?;
    let targets: Vec<f32> = entries
        .iter()
        .map(|e| if e.pair.same { 1.0 } else { 0.0 })
        .collect();
    Ok(PairBatch {
        left: pixels_to_tensor(left, entries.len(), h, w, device)?,
        right: pixels_to_tensor(right, entries.len(), h, w, device)?,
        targets: Tensor::from_vec(targets, entries.len(), device)?,
    })
}

/// The images of an episode as an `(n, 1, h, w)` f32 tensor (ink = 1.0), in episode
/// order: each turned by its rotation ([`GrayImage::turned`]) and then, given a
/// distortion and a seed, warped as [`crate::augment::distort_batch`] would at the same
/// batch position (image `i` by a transform drawn from [`image_rng`]`(seed, i)`).
/// Done in parallel; the result depends only on the arguments. An error, not a panic,
/// for an empty or inconsistent episode, an image index out of range, images of
/// different sizes, an odd rotation of a non-square image, or an invalid distortion.
pub fn episode_tensor(
    data: &Dataset,
    episode: &Episode,
    distortion: Option<(&KochDistortion, u64)>,
    device: &Device,
) -> Result<Tensor, DataError> {
    if let Some((d, _)) = distortion {
        d.validate()
            .map_err(|e| DataError::Invalid(e.to_string()))?;
    }
    if episode.rotations.len() != episode.images.len() {
        return Err(DataError::Invalid(format!(
            "an episode of {} images has {} rotations",
            episode.images.len(),
            episode.rotations.len()
        )));
    }
    let Some(&first) = episode.images.first() else {
        return Err(DataError::Invalid(
            "cannot make a tensor of an episode of no images".into(),
        ));
    };
    if let Some(&i) = episode.images.iter().find(|&&i| i >= data.len()) {
        return Err(DataError::Invalid(format!(
            "episode image {i} is not in a data set of {} images",
            data.len()
        )));
    }
    let (w, h) = (data.image(first).width(), data.image(first).height());
    for (&i, &turns) in episode.images.iter().zip(&episode.rotations) {
        let img = data.image(i);
        let path = || data.index().images()[i].path.display();
        if (img.width(), img.height()) != (w, h) {
            return Err(DataError::Invalid(format!(
                "{} is {}×{}, the episode is {w}×{h}",
                path(),
                img.width(),
                img.height()
            )));
        }
        if turns % 2 == 1 && w != h {
            return Err(DataError::Invalid(format!(
                "{} is {w}×{h}: only square images can be turned by {turns} quarter turns",
                path()
            )));
        }
    }
    let len = w * h;
    let mut pixels = vec![0f32; episode.images.len() * len];
    if len > 0 {
        pixels
            .par_chunks_mut(len)
            .zip(episode.images.par_iter().zip(&episode.rotations))
            .enumerate()
            .with_min_len(4)
            .for_each(|(pos, (out, (&i, &turns)))| {
                let img = data.image(i);
                let turned;
                let img = if turns == 0 {
                    img
                } else {
                    turned = img.turned(turns);
                    &turned
                };
                match distortion {
                    Some((d, seed)) => {
                        warp_into(img, &d.sample(&mut image_rng(seed, pos as u64)), out)
                    }
                    None => img.write_f32(out),
                }
            });
    }
    pixels_to_tensor(pixels, episode.images.len(), h, w, device)
}

/// Stacks same-sized images into an `(n, 1, h, w)` f32 tensor.
pub fn images_to_tensor(images: &[&GrayImage], device: &Device) -> Result<Tensor, DataError> {
    let Some(first) = images.first() else {
        return Err(DataError::Invalid(
            "cannot make a tensor of no images".into(),
        ));
    };
    let (w, h) = (first.width(), first.height());
    let mut pixels = vec![0f32; images.len() * w * h];
    for (img, out) in images.iter().zip(pixels.chunks_exact_mut(w * h)) {
        if (img.width(), img.height()) != (w, h) {
            return Err(DataError::Invalid(format!(
                "images of different sizes in one batch: {w}×{h} and {}×{}",
                img.width(),
                img.height()
            )));
        }
        img.write_f32(out);
    }
    pixels_to_tensor(pixels, images.len(), h, w, device)
}

/// Wraps `n` row-major `h × w` images of floats as an `(n, 1, h, w)` tensor.
pub fn pixels_to_tensor(
    pixels: Vec<f32>,
    n: usize,
    h: usize,
    w: usize,
    device: &Device,
) -> Result<Tensor, DataError> {
    Ok(Tensor::from_vec(pixels, (n, 1, h, w), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_batches_distort_each_image_on_its_own() {
        use crate::index::DatasetIndex;
        use crate::sample::Pair;
        let index = DatasetIndex::synthetic(&[vec![vec![1, 2]]]);
        let mut rng = crate::seeded_rng(0);
        let images: Vec<GrayImage> = (0..2)
            .map(|_| crate::augment::synthetic_glyph(&mut rng, 20, 20))
            .collect();
        let data = Dataset::from_parts(index, images).unwrap();
        let pair = Pair {
            a: 0,
            b: 0,
            same: true,
        };
        let entries = [
            PairEntry {
                pair,
                distortion_seed: None,
            },
            PairEntry {
                pair,
                distortion_seed: Some(7),
            },
            PairEntry {
                pair: Pair {
                    a: 0,
                    b: 1,
                    same: false,
                },
                distortion_seed: Some(7),
            },
        ];
        let wide = KochDistortion {
            p_include: 1.0,
            ..KochDistortion::default()
        };
        let batch = pair_batch(&data, &entries, &wide, &Device::Cpu).unwrap();
        assert_eq!(batch.left.dims(), &[3, 1, 20, 20]);
        let left: Vec<Vec<f32>> = batch.left.flatten_from(1).unwrap().to_vec2().unwrap();
        let right: Vec<Vec<f32>> = batch.right.flatten_from(1).unwrap().to_vec2().unwrap();
        // Undistorted: both sides are the image itself.
        assert_eq!(left[0], right[0]);
        // Distorted: the two sides of a pair get different transforms...
        assert_ne!(left[1], right[1]);
        assert_ne!(left[1], left[0]);
        // ...and a seed reproduces them.
        assert_eq!(left[1], left[2]);
        let targets: Vec<f32> = batch.targets.to_vec1().unwrap();
        assert_eq!(targets, vec![1.0, 1.0, 0.0]);
        let again = pair_batch(&data, &entries, &wide, &Device::Cpu).unwrap();
        let right_again: Vec<Vec<f32>> = again.right.flatten_from(1).unwrap().to_vec2().unwrap();
        assert_eq!(right, right_again);
    }

    #[test]
    fn stacks_with_channel_axis() {
        let a = GrayImage::from_pixels(2, 1, vec![255, 0]).unwrap();
        let b = GrayImage::from_pixels(2, 1, vec![0, 255]).unwrap();
        let t = images_to_tensor(&[&a, &b], &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[2, 1, 1, 2]);
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, vec![1.0, 0.0, 0.0, 1.0]);
        let c = GrayImage::blank(3, 1);
        assert!(images_to_tensor(&[&a, &c], &Device::Cpu).is_err());
        assert!(images_to_tensor(&[], &Device::Cpu).is_err());
    }

    /// Four characters of two images each, 20×20 synthetic glyphs.
    fn glyph_data() -> Dataset {
        use crate::index::DatasetIndex;
        let index = DatasetIndex::synthetic(&[vec![vec![1, 2]; 4]]);
        let mut rng = crate::seeded_rng(1);
        let images: Vec<GrayImage> = (0..8)
            .map(|_| crate::augment::synthetic_glyph(&mut rng, 20, 20))
            .collect();
        Dataset::from_parts(index, images).unwrap()
    }

    fn episode(images: Vec<usize>, rotations: Vec<u8>) -> Episode {
        Episode {
            way: images.len() / 2,
            queries: 1,
            characters: (0..images.len() / 2).collect(),
            images,
            rotations,
        }
    }

    fn rows(t: &Tensor) -> Vec<Vec<f32>> {
        t.flatten_from(1).unwrap().to_vec2().unwrap()
    }

    #[test]
    fn episode_tensors_turn_and_distort_each_image() {
        let data = glyph_data();
        let plain = episode(vec![0, 1, 4, 5], vec![0; 4]);
        let t = episode_tensor(&data, &plain, None, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[4, 1, 20, 20]);
        let images: Vec<&GrayImage> = plain.images.iter().map(|&i| data.image(i)).collect();
        let want = images_to_tensor(&images, &Device::Cpu).unwrap();
        assert_eq!(rows(&t), rows(&want));

        let turned = episode(vec![0, 1, 4, 5], vec![1, 1, 3, 3]);
        let got = rows(&episode_tensor(&data, &turned, None, &Device::Cpu).unwrap());
        for (k, (&i, &r)) in turned.images.iter().zip(&turned.rotations).enumerate() {
            let mut want = vec![0f32; 400];
            data.image(i).rotate90(r).write_f32(&mut want);
            assert_eq!(got[k], want, "image {k}");
            assert_ne!(got[k], rows(&t)[k], "image {k} unturned");
        }

        let wide = KochDistortion {
            p_include: 1.0,
            ..KochDistortion::default()
        };
        let warped = |seed| {
            rows(&episode_tensor(&data, &turned, Some((&wide, seed)), &Device::Cpu).unwrap())
        };
        let a = warped(9);
        assert_eq!(a, warped(9));
        let b = warped(10);
        for k in 0..4 {
            assert_ne!(a[k], b[k], "image {k}");
            assert_ne!(a[k], got[k], "image {k} undistorted");
        }
        // As distort_batch warps the turned images.
        let turned_images: Vec<GrayImage> = turned
            .images
            .iter()
            .zip(&turned.rotations)
            .map(|(&i, &r)| data.image(i).rotate90(r))
            .collect();
        let refs: Vec<&GrayImage> = turned_images.iter().collect();
        let mut batch = vec![0f32; 4 * 400];
        crate::augment::distort_batch(&refs, &wide, 9, &mut batch).unwrap();
        assert_eq!(a.concat(), batch);
    }

    #[test]
    fn bad_episodes_are_errors() {
        use crate::index::DatasetIndex;
        let data = glyph_data();
        let invalid = KochDistortion {
            p_include: 2.0,
            ..KochDistortion::default()
        };
        let ok = episode(vec![0, 1, 2, 3], vec![0, 0, 2, 2]);
        assert!(episode_tensor(&data, &ok, None, &Device::Cpu).is_ok());
        assert!(episode_tensor(&data, &ok, Some((&invalid, 1)), &Device::Cpu).is_err());
        for bad in [
            episode(vec![], vec![]),
            episode(vec![0, 1], vec![0]),
            episode(vec![0, 8], vec![0, 0]),
        ] {
            assert!(
                episode_tensor(&data, &bad, None, &Device::Cpu).is_err(),
                "{bad:?}"
            );
        }
        // Mixed sizes, and odd turns of a non-square image.
        let index = DatasetIndex::synthetic(&[vec![vec![1, 2], vec![1, 2]]]);
        let mixed = Dataset::from_parts(
            index,
            vec![
                GrayImage::blank(4, 4),
                GrayImage::blank(4, 4),
                GrayImage::blank(4, 3),
                GrayImage::blank(4, 3),
            ],
        )
        .unwrap();
        let e = episode(vec![0, 1, 2, 3], vec![0; 4]);
        let err = episode_tensor(&mixed, &e, None, &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("4×3"), "{err}");
        let wide = episode(vec![2, 3], vec![2, 2]);
        assert!(episode_tensor(&mixed, &wide, None, &Device::Cpu).is_ok());
        let err = episode_tensor(&mixed, &episode(vec![2, 3], vec![0, 1]), None, &Device::Cpu)
            .unwrap_err();
        assert!(err.to_string().contains("square"), "{err}");
    }
}
