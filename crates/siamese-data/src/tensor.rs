//! Batches of images as candle tensors of shape `(n, 1, height, width)`, ink = 1.0.

use candle_core::{Device, Tensor};

use crate::DataError;
use crate::image::GrayImage;

/// Stacks same-sized images into an `(n, 1, h, w)` f32 tensor.
pub fn images_to_tensor(images: &[&GrayImage], device: &Device) -> Result<Tensor, DataError> {
    let Some(first) = images.first() else {
        return Err(DataError::Invalid("cannot make a tensor of no images".into()));
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
}
