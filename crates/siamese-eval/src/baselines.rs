//! Baselines that need no training: Lake et al.'s Modified Hausdorff Distance and
//! nearest neighbour on raw pixels. Both are distances, so their scores are the
//! negated distances (higher = more similar).

use rayon::prelude::*;
use siamese_data::GrayImage;

use crate::{EvalError, OneShotScorer};

/// The inked pixels of an image as `(row, column)` coordinates centred on their mean,
/// stored as two columns (for vectorised distance loops).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PointSet {
    rows: Vec<f64>,
    cols: Vec<f64>,
}

impl PointSet {
    /// The pixels of `image` whose value is at least `ink_threshold` (ink = 255), as
    /// `(row, col)` coordinates minus their mean, in row-major order.
    pub fn from_ink(image: &GrayImage, ink_threshold: u8) -> Self {
        let (w, h) = (image.width(), image.height());
        let mut set = PointSet::default();
        for r in 0..h {
            for (c, &p) in image.pixels()[r * w..(r + 1) * w].iter().enumerate() {
                if p >= ink_threshold {
                    set.rows.push(r as f64);
                    set.cols.push(c as f64);
                }
            }
        }
        let n = set.len() as f64;
        if n > 0.0 {
            let mr = set.rows.iter().sum::<f64>() / n;
            let mc = set.cols.iter().sum::<f64>() / n;
            set.rows.iter_mut().for_each(|x| *x -= mr);
            set.cols.iter_mut().for_each(|x| *x -= mc);
        }
        set
    }

    /// Points given directly as `(row, col)`, used as they are (not centred).
    pub fn from_points(points: &[[f64; 2]]) -> Self {
        PointSet {
            rows: points.iter().map(|p| p[0]).collect(),
            cols: points.iter().map(|p| p[1]).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The `i`-th point as `(row, col)`.
    pub fn point(&self, i: usize) -> [f64; 2] {
        [self.rows[i], self.cols[i]]
    }
}

/// The Modified Hausdorff Distance of Dubuisson & Jain (1994), as in Lake et al.'s
/// `ModHausdorffDistance.m`:
/// `max(mean_{a∈A} min_{b∈B} ‖a−b‖, mean_{b∈B} min_{a∈A} ‖a−b‖)` (Euclidean). NaN when
/// either set is empty. Symmetric.
pub fn modified_hausdorff_distance(a: &PointSet, b: &PointSet) -> f64 {
    if a.is_empty() || b.is_empty() {
        return f64::NAN;
    }
    // Squared distances throughout; the square root of a minimum is the minimum of
    // the square roots, so only the minima need one.
    let mut b_min = vec![f64::INFINITY; b.len()];
    let mut a_sum = 0.0;
    for (&ar, &ac) in a.rows.iter().zip(&a.cols) {
        let mut a_min = f64::INFINITY;
        for ((&br, &bc), bm) in b.rows.iter().zip(&b.cols).zip(b_min.iter_mut()) {
            let (dr, dc) = (ar - br, ac - bc);
            let d = dr * dr + dc * dc;
            a_min = if d < a_min { d } else { a_min };
            *bm = if d < *bm { d } else { *bm };
        }
        a_sum += a_min.sqrt();
    }
    let b_sum: f64 = b_min.iter().map(|d| d.sqrt()).sum();
    (a_sum / a.len() as f64).max(b_sum / b.len() as f64)
}

/// Lake et al.'s baseline (`demo_classification.m`): each image becomes its inked
/// pixels as `(row, col)` points centred on their mean, and the score of a pair is
/// minus their [`modified_hausdorff_distance`], so the closest candidate wins. An
/// image without ink gives NaN scores, which make its trials wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModifiedHausdorff {
    /// A pixel is ink when its value is at least this (ink = 255). The default, 255,
    /// is Lake's rule (a pixel is a point when it is pure black in the PNG); on
    /// Omniglot's 1-bit images any threshold in 1..=255 gives the same points.
    pub ink_threshold: u8,
}

impl Default for ModifiedHausdorff {
    fn default() -> Self {
        ModifiedHausdorff { ink_threshold: 255 }
    }
}

impl OneShotScorer for ModifiedHausdorff {
    type Embeddings = Vec<PointSet>;

    fn name(&self) -> String {
        "modified-hausdorff".into()
    }

    fn embed(&self, images: &[&GrayImage]) -> Result<Vec<PointSet>, EvalError> {
        Ok(images
            .par_iter()
            .map(|img| PointSet::from_ink(img, self.ink_threshold))
            .collect())
    }

    fn score_pairs(&self, points: &Vec<PointSet>, pairs: &[(usize, usize)]) -> Result<Vec<f64>, EvalError> {
        check_rows(&self.name(), points.len(), pairs)?;
        Ok(pairs
            .par_iter()
            .with_min_len(8)
            .map(|&(a, b)| -modified_hausdorff_distance(&points[a], &points[b]))
            .collect())
    }
}

/// The pixels of an image as floats (ink = 1.0) and its size.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelVector {
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
}

/// Nearest neighbour on raw pixels: the score of a pair is minus the Euclidean (L2)
/// distance between the images' float pixels (ink = 1.0, background = 0.0). On
/// binary images the squared distance is the number of differing pixels, an integer,
/// so exact ties between candidates happen, and count as wrong. Images of different
/// sizes cannot be compared (an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PixelNn;

/// The Euclidean distance between two equally long vectors (accumulated in `f64`).
pub fn l2_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = f64::from(x - y);
            d * d
        })
        .sum::<f64>()
        .sqrt()
}

impl OneShotScorer for PixelNn {
    type Embeddings = Vec<PixelVector>;

    fn name(&self) -> String {
        "pixel-nn".into()
    }

    fn embed(&self, images: &[&GrayImage]) -> Result<Vec<PixelVector>, EvalError> {
        Ok(images
            .par_iter()
            .map(|img| {
                let mut values = vec![0f32; img.width() * img.height()];
                img.write_f32(&mut values);
                PixelVector {
                    width: img.width(),
                    height: img.height(),
                    values,
                }
            })
            .collect())
    }

    fn score_pairs(&self, pixels: &Vec<PixelVector>, pairs: &[(usize, usize)]) -> Result<Vec<f64>, EvalError> {
        check_rows(&self.name(), pixels.len(), pairs)?;
        pairs
            .par_iter()
            .with_min_len(64)
            .map(|&(a, b)| {
                let (a, b) = (&pixels[a], &pixels[b]);
                if (a.width, a.height) != (b.width, b.height) {
                    return Err(EvalError::method(
                        &self.name(),
                        format!(
                            "cannot compare a {}×{} image with a {}×{} one",
                            a.width, a.height, b.width, b.height
                        ),
                    ));
                }
                Ok(-l2_distance(&a.values, &b.values))
            })
            .collect()
    }
}

fn check_rows(method: &str, rows: usize, pairs: &[(usize, usize)]) -> Result<(), EvalError> {
    match pairs.iter().find(|&&(a, b)| a >= rows || b >= rows) {
        Some(p) => Err(EvalError::method(
            method,
            format!("pair {p:?} is out of the {rows} embedded images"),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook definition, with every distance computed.
    fn naive_mhd(a: &[[f64; 2]], b: &[[f64; 2]]) -> f64 {
        let d = |p: [f64; 2], q: [f64; 2]| ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt();
        let directed = |x: &[[f64; 2]], y: &[[f64; 2]]| {
            x.iter()
                .map(|&p| y.iter().map(|&q| d(p, q)).fold(f64::INFINITY, f64::min))
                .sum::<f64>()
                / x.len() as f64
        };
        directed(a, b).max(directed(b, a))
    }

    #[test]
    fn mhd_matches_the_definition() {
        let a = [[0.0, 0.0], [1.0, 0.0], [5.0, 2.5]];
        let b = [[0.0, 1.0], [3.0, 3.0]];
        let fast = modified_hausdorff_distance(&PointSet::from_points(&a), &PointSet::from_points(&b));
        assert!((fast - naive_mhd(&a, &b)).abs() < 1e-12, "{fast}");
        // A→B: 1, √2, √(4+0.25); B→A: 1, √(4+0.25) → max(mean) is A→B.
        let expected = (1.0 + 2f64.sqrt() + 4.25f64.sqrt()) / 3.0;
        assert!((fast - expected).abs() < 1e-12);
        let same = PointSet::from_points(&a);
        assert_eq!(modified_hausdorff_distance(&same, &same), 0.0);
        assert!(modified_hausdorff_distance(&same, &PointSet::default()).is_nan());
    }

    #[test]
    fn ink_points_are_row_col_and_centred() {
        // 3 wide, 2 high; ink at (row 0, col 2) and (row 1, col 0).
        let img = GrayImage::from_pixels(3, 2, vec![0, 0, 255, 255, 0, 128]).unwrap();
        let p = PointSet::from_ink(&img, 255);
        assert_eq!(p.len(), 2);
        assert_eq!(p.point(0), [-0.5, 1.0]);
        assert_eq!(p.point(1), [0.5, -1.0]);
        assert_eq!(PointSet::from_ink(&img, 128).len(), 3);
        // Centring makes the distance blind to translation.
        let mut shifted = GrayImage::blank(3, 2);
        shifted.pixels_mut()[1] = 255;
        shifted.pixels_mut()[3] = 255;
        let q = PointSet::from_ink(&shifted, 255);
        let img2 = GrayImage::from_pixels(3, 2, vec![0, 255, 0, 255, 0, 0]).unwrap();
        assert_eq!(modified_hausdorff_distance(&q, &PointSet::from_ink(&img2, 255)), 0.0);
    }

    #[test]
    fn pixel_distance_counts_differing_binary_pixels() {
        let a = GrayImage::from_pixels(2, 2, vec![255, 0, 0, 255]).unwrap();
        let b = GrayImage::from_pixels(2, 2, vec![0, 0, 255, 255]).unwrap();
        let c = GrayImage::blank(3, 1);
        let e = PixelNn.embed(&[&a, &b, &c]).unwrap();
        let s = PixelNn.score_pairs(&e, &[(0, 1), (1, 1)]).unwrap();
        assert_eq!(s, vec![-(2f64.sqrt()), 0.0]);
        assert!(PixelNn.score_pairs(&e, &[(0, 2)]).is_err());
        assert!(PixelNn.score_pairs(&e, &[(0, 3)]).is_err());
    }
}
