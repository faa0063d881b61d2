//! Baselines that need no training: Lake et al.'s Modified Hausdorff Distance and
//! nearest neighbour on raw pixels. Both are distances, so their scores are the
//! negated distances (higher = more similar).

use rayon::prelude::*;
use siamese_data::GrayImage;

use crate::{EvalError, OneShotScorer};

/// The inked pixels of an image as `(row, column)` coordinates centred on their mean,
/// sorted by row, then column, and grouped by row, so that nearest-point queries
/// need only look at the few rows near the query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PointSet {
    rows: Vec<f64>,
    cols: Vec<f64>,
    /// The distinct row coordinates, ascending.
    row_values: Vec<f64>,
    /// Points of `row_values[i]` are `row_starts[i]..row_starts[i + 1]`.
    row_starts: Vec<usize>,
}

impl PointSet {
    /// The pixels of `image` whose value is at least `ink_threshold` (ink = 255), as
    /// `(row, col)` coordinates minus their mean, in row-major order.
    pub fn from_ink(image: &GrayImage, ink_threshold: u8) -> Self {
        let (w, h) = (image.width(), image.height());
        let (mut rows, mut cols) = (Vec::new(), Vec::new());
        let pixels = image.pixels();
        for r in 0..h {
            for (c, &p) in pixels[r * w..(r + 1) * w].iter().enumerate() {
                if p >= ink_threshold {
                    rows.push(r as f64);
                    cols.push(c as f64);
                }
            }
        }
        let n = rows.len() as f64;
        if n > 0.0 {
            let mr = rows.iter().sum::<f64>() / n;
            let mc = cols.iter().sum::<f64>() / n;
            rows.iter_mut().for_each(|x| *x -= mr);
            cols.iter_mut().for_each(|x| *x -= mc);
        }
        PointSet::grouped(rows, cols)
    }

    /// Points given directly as `(row, col)`, used as they are (not centred), stored
    /// sorted by row then column. Coordinates must be finite.
    pub fn from_points(points: &[[f64; 2]]) -> Self {
        let mut sorted = points.to_vec();
        sorted.sort_by(|p, q| p[0].total_cmp(&q[0]).then(p[1].total_cmp(&q[1])));
        PointSet::grouped(
            sorted.iter().map(|p| p[0]).collect(),
            sorted.iter().map(|p| p[1]).collect(),
        )
    }

    /// Indexes rows of points already sorted by row, then column.
    fn grouped(rows: Vec<f64>, cols: Vec<f64>) -> Self {
        let mut row_values = Vec::new();
        let mut row_starts = Vec::new();
        for (i, &r) in rows.iter().enumerate() {
            if row_values.last() != Some(&r) {
                row_values.push(r);
                row_starts.push(i);
            }
        }
        row_starts.push(rows.len());
        PointSet {
            rows,
            cols,
            row_values,
            row_starts,
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

    /// `mean_{a ∈ self} min_{b ∈ other} ‖a − b‖`, a row of `self` at a time: the
    /// rows of `other` are visited outwards from the row's coordinate, each merged
    /// with the row in one pass over both (sorted) column lists, until the row
    /// distance alone reaches the worst best-so-far of the row (a point of a row at
    /// least that far cannot be nearer than any point's best). Within a row only
    /// the two columns around a point can be its nearest. Exact, and with the
    /// arithmetic of the definition (squared distances `(r−r')² + (c−c')²`, one
    /// square root per minimum, summed in point order), so the result is the same
    /// to the bit as a search over all pairs of points.
    fn directed_mean(&self, other: &PointSet) -> f64 {
        let mut best = Vec::new();
        let mut sum = 0.0;
        let mut start = 0;
        for (i, &r) in self.row_values.iter().enumerate() {
            let cols = &self.cols[self.row_starts[i]..self.row_starts[i + 1]];
            best.clear();
            best.resize(cols.len(), f64::INFINITY);
            // Rows of both sets ascend: the first row of `other` at or after `r`.
            while start < other.row_values.len() && other.row_values[start] < r {
                start += 1;
            }
            let mut worst = f64::INFINITY;
            let merge = |j: usize, best: &mut [f64], worst: &mut f64| -> bool {
                let dr = r - other.row_values[j];
                let dr2 = dr * dr;
                if dr2 >= *worst {
                    return false;
                }
                let theirs = &other.cols[other.row_starts[j]..other.row_starts[j + 1]];
                let mut p = 0;
                for (&c, b) in cols.iter().zip(best.iter_mut()) {
                    while p < theirs.len() && theirs[p] < c {
                        p += 1;
                    }
                    if dr2 >= *b {
                        continue;
                    }
                    for &x in &theirs[p.saturating_sub(1)..(p + 1).min(theirs.len())] {
                        let dc = c - x;
                        let d = dr2 + dc * dc;
                        if d < *b {
                            *b = d;
                        }
                    }
                }
                *worst = best.iter().copied().fold(0.0, f64::max);
                true
            };
            for j in start..other.row_values.len() {
                if !merge(j, &mut best, &mut worst) {
                    break;
                }
            }
            for j in (0..start).rev() {
                if !merge(j, &mut best, &mut worst) {
                    break;
                }
            }
            for d in &best {
                sum += d.sqrt();
            }
        }
        sum / self.len() as f64
    }
}

/// The Modified Hausdorff Distance of Dubuisson & Jain (1994), as in Lake et al.'s
/// `ModHausdorffDistance.m`:
/// `max(mean_{a∈A} min_{b∈B} ‖a−b‖, mean_{b∈B} min_{a∈A} ‖a−b‖)` (Euclidean). NaN when
/// either set is empty. Symmetric. Each nearest point is found exactly, by a search
/// over the rows near the query point only, so a pair of characters of ~1000 ink
/// pixels costs microseconds rather than the ~10⁶ distances of the definition.
pub fn modified_hausdorff_distance(a: &PointSet, b: &PointSet) -> f64 {
    if a.is_empty() || b.is_empty() {
        return f64::NAN;
    }
    a.directed_mean(b).max(b.directed_mean(a))
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

    fn score_pairs(
        &self,
        points: &Vec<PointSet>,
        pairs: &[(usize, usize)],
    ) -> Result<Vec<f64>, EvalError> {
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

    fn score_pairs(
        &self,
        pixels: &Vec<PixelVector>,
        pairs: &[(usize, usize)],
    ) -> Result<Vec<f64>, EvalError> {
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
        let fast =
            modified_hausdorff_distance(&PointSet::from_points(&a), &PointSet::from_points(&b));
        assert!((fast - naive_mhd(&a, &b)).abs() < 1e-12, "{fast}");
        // A→B: 1, √2, √4.25 (mean 1.49); B→A: 1, √4.25 (mean 1.53, the larger).
        let expected = (1.0 + 4.25f64.sqrt()) / 2.0;
        assert!((fast - expected).abs() < 1e-12);
        let same = PointSet::from_points(&a);
        assert_eq!(modified_hausdorff_distance(&same, &same), 0.0);
        assert!(modified_hausdorff_distance(&same, &PointSet::default()).is_nan());
    }

    /// The definition over all pairs of points, with the same arithmetic as the fast
    /// search (squared distances, then one square root per minimum, summed in the
    /// set's order): must agree bit for bit.
    fn brute_force_mhd(a: &PointSet, b: &PointSet) -> f64 {
        let directed = |x: &PointSet, y: &PointSet| {
            let mut sum = 0.0;
            for (&r, &c) in x.rows.iter().zip(&x.cols) {
                let mut best = f64::INFINITY;
                for (&r2, &c2) in y.rows.iter().zip(&y.cols) {
                    let (dr, dc) = (r - r2, c - c2);
                    let d = dr * dr + dc * dc;
                    if d < best {
                        best = d;
                    }
                }
                sum += best.sqrt();
            }
            sum / x.len() as f64
        };
        directed(a, b).max(directed(b, a))
    }

    /// Random blotchy images: strokes of ink on a `size × size` canvas.
    fn random_images(count: usize, size: usize, seed: u64) -> Vec<GrayImage> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        (0..count)
            .map(|_| {
                let mut img = GrayImage::blank(size, size);
                let (mut x, mut y) = (next(size), next(size));
                for _ in 0..next(4 * size) + 1 {
                    img.pixels_mut()[y * size + x] = 255;
                    x = (x + size + next(3) - 1) % size;
                    y = (y + size + next(3) - 1) % size;
                    if next(20) == 0 {
                        (x, y) = (next(size), next(size));
                    }
                }
                img
            })
            .collect()
    }

    #[test]
    fn the_row_search_is_exact() {
        let images = random_images(24, 40, 7);
        let sets: Vec<PointSet> = images.iter().map(|i| PointSet::from_ink(i, 255)).collect();
        for a in &sets {
            for b in &sets {
                let fast = modified_hausdorff_distance(a, b);
                assert_eq!(fast.to_bits(), brute_force_mhd(a, b).to_bits());
            }
        }
        // Arbitrary (non-grid) points, several per row.
        let a: Vec<[f64; 2]> = (0..50)
            .map(|i| [f64::from(i % 7) * 0.7, f64::from(i) * 0.31])
            .collect();
        let b: Vec<[f64; 2]> = (0..30)
            .map(|i| [f64::from(i % 5) * 1.3 - 2.0, f64::from(i * i % 17)])
            .collect();
        let (pa, pb) = (PointSet::from_points(&a), PointSet::from_points(&b));
        assert_eq!(
            modified_hausdorff_distance(&pa, &pb).to_bits(),
            brute_force_mhd(&pa, &pb).to_bits()
        );
        assert!((modified_hausdorff_distance(&pa, &pb) - naive_mhd(&a, &b)).abs() < 1e-12);
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
        assert_eq!(
            modified_hausdorff_distance(&q, &PointSet::from_ink(&img2, 255)),
            0.0
        );
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
