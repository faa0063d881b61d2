//! Fast CPU convolution and max-pool as candle custom ops (in progress).
