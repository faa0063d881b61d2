//! Helpers shared by the evaluation crate's integration tests: the real Omniglot data
//! (extracted once from the mirror, see `siamese_tests`) and a synthetic data set
//! whose images encode their labels.
#![allow(dead_code, unused_imports)]

use siamese_data::index::DatasetIndex;
use siamese_data::{Dataset, GrayImage};

pub use siamese_tests::extracted_dataset;

/// `alphabets` alphabets × `characters` characters × drawers 1–20, as 4×4 images
/// whose first pixel is the character (mod 256), second the drawer, third the
/// alphabet: a scorer can "know the answer" from the pixels.
pub fn labelled_dataset(alphabets: usize, characters: usize) -> Dataset {
    let chars = vec![(1..=20).collect::<Vec<u8>>(); characters];
    let index = DatasetIndex::synthetic(&vec![chars; alphabets]);
    let pixels = index
        .images()
        .iter()
        .map(|e| {
            let mut px = vec![0u8; 16];
            px[0] = (e.character % 256) as u8;
            px[1] = e.drawer;
            px[2] = index.characters()[e.character].alphabet as u8;
            GrayImage::from_pixels(4, 4, px).unwrap()
        })
        .collect();
    Dataset::from_parts(index, pixels).unwrap()
}
