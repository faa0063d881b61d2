//! The trained network as a one-shot method, with test-time views.

use candle_core::{D, Tensor};
use siamese_data::GrayImage;
use siamese_model::SiameseNet;

use crate::scorer::CandleScorer;
use crate::{EvalError, OneShotScorer};

/// Images per call of a tower when embedding many views of a batch: bounds the
/// activations held at once (64 channels × 32 × 32 floats are 256 KiB an image).
const VIEW_BATCH: usize = 1024;

/// Test-time augmentation: the views of each image a siamese scorer looks at.
///
/// - **Symmetries**: the image turned by `0, 1, …, turns − 1` quarter turns
///   counter-clockwise, and with `mirror` each of those mirrored left to right first
///   ([`GrayImage::turned`]'s codes). A network trained with rotations and mirror
///   images as classes of their own (the episodes' `rotations` and `mirror`) has
///   learned to compare characters in each of these poses, so each pose is another
///   opinion on the same pair: a pair's score is the **mean of the head's logits
///   over the poses**, query and candidate in the same pose. (Averaging the
///   features of the poses instead mixes what the network keeps apart, and on the
///   validation alphabets it lost 4 to 17 points.)
/// - **Shifts**: within each pose, the image's features are the **mean of the
///   tower's features** of the image and of its four copies shifted by `shift`
///   pixels left, right, up and down (zero fill): the same character, so one
///   embedding.
///
/// Every image is treated alike, supports and queries, and no labels are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestTimeViews {
    /// Shift in pixels (0: no shifted copies).
    pub shift: usize,
    /// Quarter turns, 1 (the image as it is) to 4 (0°, 90°, 180°, 270°).
    pub turns: u8,
    /// Also the mirror image of each turn.
    pub mirror: bool,
}

impl TestTimeViews {
    /// The image as it is, once.
    pub const NONE: TestTimeViews = TestTimeViews {
        shift: 0,
        turns: 1,
        mirror: false,
    };

    /// Only shifted copies, in the image's own pose.
    pub fn shifted(shift: usize) -> TestTimeViews {
        TestTimeViews {
            shift,
            ..TestTimeViews::NONE
        }
    }

    /// The poses, as [`GrayImage::turned`] codes: quarter turns, plus 4 when mirrored.
    pub fn poses(&self) -> Vec<u8> {
        let mirrors: &[u8] = if self.mirror { &[0, 4] } else { &[0] };
        mirrors
            .iter()
            .flat_map(|&m| (0..self.turns.max(1)).map(move |t| m + t))
            .collect()
    }

    /// The shifts `(down, right)` in pixels, `(0, 0)` first.
    pub fn shifts(&self) -> Vec<(isize, isize)> {
        let s = self.shift as isize;
        if s == 0 {
            return vec![(0, 0)];
        }
        vec![(0, 0), (0, -s), (0, s), (-s, 0), (s, 0)]
    }

    /// Tower passes per image.
    pub fn views_per_image(&self) -> usize {
        self.poses().len() * self.shifts().len()
    }

    /// What the views are, for a report's method name (`None` without any).
    pub fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.shift > 0 {
            parts.push(format!("mean features over ±{} px shifts", self.shift));
        }
        let poses = self.poses().len();
        if poses > 1 {
            let what = match (self.turns.max(1), self.mirror) {
                (1, true) => "the image and its mirror image".to_string(),
                (t, false) => format!("{t} quarter turns"),
                (t, true) => format!("{t} quarter turns and their mirror images"),
            };
            parts.push(format!("mean logit over {poses} poses: {what}"));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// Checks the values; the message names the field.
    pub fn validate(&self) -> Result<(), EvalError> {
        if !(1..=4).contains(&self.turns) {
            return Err(EvalError::Invalid(format!(
                "test-time views: turns must be 1 to 4 (got {})",
                self.turns
            )));
        }
        Ok(())
    }
}

/// The network as a [`OneShotScorer`]: the tower embeds each image once, the head
/// scores (query, candidate) pairs of embeddings; the score is the head's logit.
/// Images larger than the network's input are shrunk to it (Omniglot's 105×105 by
/// block means to 35×35 for `koch35`, by area resampling to 28×28 for `conv4`).
pub fn siamese_scorer<'a>(
    net: &'a SiameseNet,
    name: &str,
) -> impl OneShotScorer<Embeddings = Tensor> + 'a {
    siamese_scorer_with_views(net, name, TestTimeViews::NONE)
        .expect("one network seen once is always a valid method")
}

/// [`siamese_scorer`] with test-time augmentation ([`TestTimeViews`]); invalid
/// views are an error.
pub fn siamese_scorer_with_views<'a>(
    net: &'a SiameseNet,
    name: &str,
    views: TestTimeViews,
) -> Result<impl OneShotScorer<Embeddings = Tensor> + 'a, EvalError> {
    ensemble_scorer(std::slice::from_ref(net), name, views)
}

/// Several networks as one method: an image's embedding is each network's features
/// (of each pose in `views`) side by side, and a pair's score is the mean of the
/// networks' logits (each network's own the mean over the poses). Averaging
/// independently trained networks cancels part of each one's errors. The networks
/// must take the same input size; one network scores exactly as
/// [`siamese_scorer_with_views`].
pub fn ensemble_scorer<'a>(
    nets: &'a [SiameseNet],
    name: &str,
    views: TestTimeViews,
) -> Result<impl OneShotScorer<Embeddings = Tensor> + 'a, EvalError> {
    views.validate()?;
    let first = nets
        .first()
        .ok_or_else(|| EvalError::method(name, "an ensemble needs at least one network"))?;
    let side = first.config().input_size;
    if let Some(other) = nets.iter().find(|n| n.config().input_size != side) {
        let why = format!(
            "the networks take different input sizes ({side}×{side} and {0}×{0}): an \
             ensemble embeds each image once, at one size",
            other.config().input_size
        );
        return Err(EvalError::method(name, why));
    }
    let poses = views.poses();
    let shifts = views.shifts();
    let pose_count = poses.len();
    let widths: Vec<usize> = nets.iter().map(|n| n.embed_dim() * pose_count).collect();
    Ok(CandleScorer::new(
        name,
        first.device().clone(),
        move |x: &Tensor| {
            let parts = nets
                .iter()
                .map(|net| embed_views(net, x, &poses, &shifts))
                .collect::<candle_core::Result<Vec<_>>>()?;
            match parts.as_slice() {
                [one] => Ok(one.clone()),
                _ => Tensor::cat(&parts, 1),
            }
        },
        move |a: &Tensor, b: &Tensor| {
            if let [net] = nets {
                return score_poses(net, a, b, pose_count);
            }
            let mut sum: Option<Tensor> = None;
            let mut offset = 0;
            for (net, &width) in nets.iter().zip(&widths) {
                let logits = score_poses(
                    net,
                    &a.narrow(1, offset, width)?,
                    &b.narrow(1, offset, width)?,
                    pose_count,
                )?
                .flatten_all()?;
                offset += width;
                sum = Some(match sum {
                    Some(s) => (s + logits)?,
                    None => logits,
                });
            }
            sum.expect("at least one network") / nets.len() as f64
        },
    )
    .with_input_size(side))
}

/// `net`'s features of `x` `(n, 1, h, w)` in each pose, side by side `(n, poses·d)`;
/// each pose's features are the mean over `shifts`.
fn embed_views(
    net: &SiameseNet,
    x: &Tensor,
    poses: &[u8],
    shifts: &[(isize, isize)],
) -> candle_core::Result<Tensor> {
    let embed = |x: &Tensor| net.embed(x).map_err(candle_core::Error::wrap);
    let per_pose = poses
        .iter()
        .map(|&code| {
            let posed = turned(x, code)?;
            if let [(0, 0)] = shifts {
                return embed(&posed);
            }
            mean_over_shifts(&posed, shifts, embed)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    match per_pose.as_slice() {
        [one] => Ok(one.clone()),
        _ => Tensor::cat(&per_pose, 1),
    }
}

/// The mean of `embed` over copies of `x` shifted by `shifts` (zero fill), embedded
/// [`VIEW_BATCH`] images at a time.
fn mean_over_shifts(
    x: &Tensor,
    shifts: &[(isize, isize)],
    embed: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    let (n, _, h, w) = x.dims4()?;
    let pad = shifts
        .iter()
        .map(|&(dy, dx)| dy.unsigned_abs().max(dx.unsigned_abs()))
        .max()
        .unwrap_or(0);
    let padded = x.pad_with_zeros(2, pad, pad)?.pad_with_zeros(3, pad, pad)?;
    // Shifting the content down by dy reads the padded image from row pad − dy.
    let copy = |&(dy, dx): &(isize, isize)| {
        let top = (pad as isize - dy) as usize;
        let left = (pad as isize - dx) as usize;
        padded.narrow(2, top, h)?.narrow(3, left, w)
    };
    let per_call = (VIEW_BATCH / n.max(1)).max(1);
    let mut sum: Option<Tensor> = None;
    for group in shifts.chunks(per_call) {
        let copies = group
            .iter()
            .map(copy)
            .collect::<candle_core::Result<Vec<_>>>()?;
        let features = embed(&Tensor::cat(&copies, 0)?)?;
        let d = features.dim(1)?;
        let part = features.reshape((group.len(), n, d))?.sum(0)?;
        sum = Some(match sum {
            Some(s) => (s + part)?,
            None => part,
        });
    }
    sum.expect("at least the unshifted copy") / shifts.len() as f64
}

/// `x` `(n, 1, h, w)` in pose `code`, as [`GrayImage::turned`] turns an image:
/// mirrored left to right when `code` ≥ 4, then `code % 4` quarter turns
/// counter-clockwise.
fn turned(x: &Tensor, code: u8) -> candle_core::Result<Tensor> {
    let w = x.dim(3)?;
    let reversed: Vec<u32> = (0..w as u32).rev().collect();
    let reversed = Tensor::from_vec(reversed, w, x.device())?;
    let mirror = |t: &Tensor| t.contiguous()?.index_select(&reversed, 3);
    let mut t = if code & 4 != 0 { mirror(x)? } else { x.clone() };
    for _ in 0..code % 4 {
        // Counter-clockwise: out[y][x] = in[x][w − 1 − y], a mirror then a transpose.
        t = mirror(&t)?.transpose(2, 3)?;
    }
    t.contiguous()
}

/// The head's logits of `(m, poses·d)` feature rows, the mean over the poses.
fn score_poses(
    net: &SiameseNet,
    a: &Tensor,
    b: &Tensor,
    poses: usize,
) -> candle_core::Result<Tensor> {
    let score = |a: &Tensor, b: &Tensor| net.score(a, b).map_err(candle_core::Error::wrap);
    if poses == 1 {
        return score(a, b);
    }
    let (m, width) = a.dims2()?;
    let d = width / poses;
    let logits = score(&a.reshape((m * poses, d))?, &b.reshape((m * poses, d))?)?;
    logits.reshape((m, poses))?.mean(D::Minus1)
}

/// AdaBN for an evaluation: `net` with batch norm's statistics taken from `images`
/// (prepared as the scorer prepares them: shrunk to the input size), `batch` at a
/// time, instead of from the training images ([`SiameseNet::with_batch_norm_adapted_to`]).
/// It uses the images without their labels, but all of them together: a transductive
/// step outside Koch's protocol, reported as such.
pub fn adapt_batch_norm(
    net: &SiameseNet,
    images: &[&GrayImage],
    batch: usize,
) -> Result<SiameseNet, EvalError> {
    const NAME: &str = "batch-norm adaptation";
    if images.is_empty() {
        return Err(EvalError::method(NAME, "no images to adapt to"));
    }
    let identity = |x: &candle_core::Tensor| Ok(x.clone());
    let prepare = CandleScorer::new(NAME, net.device().clone(), identity, |a, _| Ok(a.clone()))
        .with_input_size(net.config().input_size);
    let parts = images
        .chunks(batch.max(1))
        .map(|chunk| prepare.input_tensor(chunk))
        .collect::<Result<Vec<_>, _>>()?;
    let x = candle_core::Tensor::cat(&parts, 0)?;
    net.with_batch_norm_adapted_to(&x, batch)
        .map_err(|e| EvalError::method(NAME, e.to_string()))
}
