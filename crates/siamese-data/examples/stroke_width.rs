//! Stroke width and ink of Omniglot characters and of MNIST digits, as the networks
//! see them: the measurement behind `user_image::OMNIGLOT_STROKE_RADIUS` and the
//! choice of `eval --mnist`'s default fitting.
//!
//! `cargo run --release -p siamese-data --example stroke_width -- [OMNIGLOT_DIR] [MNIST_DIR]`
//! (defaults `data/omniglot`, `data/mnist`). For every 7th image of Omniglot's
//! background set and every 5th MNIST test digit it prints the quartiles of
//!
//! - the stroke width at 105×105: ink pixels (≥ half ink) per pixel of their
//!   Zhang–Suen skeleton (MNIST digits first placed like a character on 105×105);
//! - the mean ink and the share of pixels above half ink at 28×28, the Conv-4
//!   tower's input, for Omniglot (area-shrunk) and for MNIST under each fitting.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use siamese_data::mnist::MnistSet;
use siamese_data::user_image::{Fit, OMNIGLOT_SIDE, fit_character, thin};
use siamese_data::{GrayImage, Part, SplitName};

fn stroke_width(img: &GrayImage) -> Option<f64> {
    let mut ink: Vec<bool> = img.pixels().iter().map(|&p| p >= 128).collect();
    let inked = ink.iter().filter(|&&v| v).count();
    thin(&mut ink, img.width(), img.height());
    let skeleton = ink.iter().filter(|&&v| v).count();
    (skeleton > 0).then(|| inked as f64 / skeleton as f64)
}

fn ink_stats(img: &GrayImage) -> (f64, f64) {
    let p = img.pixels();
    let mean = p.iter().map(|&v| f64::from(v) / 255.0).sum::<f64>() / p.len() as f64;
    let dark = p.iter().filter(|&&v| v >= 128).count() as f64 / p.len() as f64;
    (mean, dark)
}

fn quartiles(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
    format!(
        "{:.3} / {:.3} / {:.3} (n = {})",
        q(0.25),
        q(0.5),
        q(0.75),
        v.len()
    )
}

fn report(name: &str, images: &[GrayImage], at105: &[GrayImage]) {
    let widths: Vec<f64> = at105.iter().filter_map(stroke_width).collect();
    let (means, darks): (Vec<f64>, Vec<f64>) = images.iter().map(ink_stats).unzip();
    println!("{name}");
    println!("  stroke width at 105 (quartiles) {}", quartiles(widths));
    println!("  mean ink at 28                  {}", quartiles(means));
    println!("  share ≥ half ink at 28          {}", quartiles(darks));
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let omniglot = PathBuf::from(args.next().unwrap_or_else(|| "data/omniglot".into()));
    let mnist = PathBuf::from(args.next().unwrap_or_else(|| "data/mnist".into()));

    let train = SplitName::KochAllDrawers
        .index(Part::Train, &omniglot)?
        .load()?;
    let raw: Vec<GrayImage> = (0..train.len())
        .step_by(7)
        .map(|i| train.image(i).clone())
        .collect();
    let small: Vec<GrayImage> = raw.iter().map(|i| Fit::AsIs.apply(i, 28)).collect();
    report("omniglot background (105 → 28 by area)", &small, &raw);

    let digits = MnistSet::load(&mnist)?;
    let picked: Vec<GrayImage> = digits.images.iter().step_by(5).cloned().collect();
    let at105: Vec<GrayImage> = picked
        .iter()
        .map(|i| fit_character(i, OMNIGLOT_SIDE))
        .collect();
    for fit in [Fit::AsIs, Fit::Character, Fit::Strokes] {
        let fitted: Vec<GrayImage> = picked.iter().map(|i| fit.apply(i, 28)).collect();
        let redrawn: Vec<GrayImage> = if fit == Fit::Strokes {
            picked.iter().map(|i| fit.apply(i, OMNIGLOT_SIDE)).collect()
        } else {
            at105.clone()
        };
        report(&format!("mnist test, fit {fit}"), &fitted, &redrawn);
    }
    Ok(())
}
