//! Koch et al.'s affine distortions (filled in by the augmentation work).
