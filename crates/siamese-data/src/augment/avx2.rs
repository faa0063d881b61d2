//! The AVX2 version of the warp's row loop: the rows' spans four at a time and their
//! samples eight at a time, with the scalar code's arithmetic lane by lane, so that
//! the results are bit-for-bit the same.

use std::arch::x86_64::*;

use super::{FIXED_INV, Rows};

/// Bytes the padded box must hold beyond its `pw × ph` pixels: [`pair_rows`] reads
/// them 32 at a time.
pub(super) const TAIL: usize = 32;

/// Whether this CPU can run [`warp_rows`].
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx2")
}

/// Whether [`warp_rows`] can address a padded box of `len` bytes (its offsets are
/// 32-bit).
pub(super) fn fits(len: usize) -> bool {
    i32::try_from(len).is_ok()
}

/// As the scalar loop of [`super::warp_bbox`] over the output rows: samples each
/// row's span from the padded box `bytes` (row length `pw`, followed by [`TAIL`]
/// spare bytes) with [`sample_row`], and zero-fills the rest of `out`. `pairs` is
/// scratch space.
///
/// # Panics
/// If `bytes` is not `pw` × (at least 2) bytes and a [`TAIL`], or more than
/// `i32::MAX`; if `out` is not whole rows.
#[target_feature(enable = "avx2")]
pub(super) fn warp_rows(
    bytes: &[u8],
    pw: usize,
    pairs: &mut Vec<u16>,
    rows: &Rows,
    out: &mut [f32],
) {
    let pairs = pair_rows(bytes, pw, pairs);
    let w = (rows.last as usize) + 1;
    assert_eq!(out.len() % w, 0, "warp_rows: whole rows");
    let h = out.len() / w;
    let (du, dv) = (rows.m[0][0], rows.m[1][0]);
    let m = rows.m;
    let splat = _mm256_set1_pd;
    // `out[..zeroed]` is written (as in the scalar loop).
    let mut zeroed = 0;
    for y in (0..h).step_by(4) {
        // `Rows::span` for rows y..y + 4 (lanes past the last row are ignored): the
        // same IEEE operations per lane, the divisions four at a time. The min and
        // max of non-NaN values (these are finite or infinite) are those of `f64`, up
        // to the sign of a zero, which the comparisons, `ceil` and `floor` below
        // ignore.
        let fy = _mm256_setr_pd(y as f64, (y + 1) as f64, (y + 2) as f64, (y + 3) as f64);
        let ru = _mm256_sub_pd(
            _mm256_add_pd(_mm256_mul_pd(splat(m[0][1]), fy), splat(m[0][2])),
            splat(rows.ox),
        );
        let rv = _mm256_sub_pd(
            _mm256_add_pd(_mm256_mul_pd(splat(m[1][1]), fy), splat(m[1][2])),
            splat(rows.oy),
        );
        let (mut t0, mut t1) = (_mm256_setzero_pd(), splat(rows.last));
        for (r, d, (lo, hi)) in [(ru, du, rows.u_range), (rv, dv, rows.v_range)] {
            if d == 0.0 {
                let inside = _mm256_and_pd(
                    _mm256_cmp_pd::<_CMP_LE_OQ>(splat(lo), r),
                    _mm256_cmp_pd::<_CMP_LE_OQ>(r, splat(hi)),
                );
                t1 = _mm256_blendv_pd(splat(-1.0), t1, inside);
            } else {
                let a = _mm256_div_pd(_mm256_sub_pd(splat(lo), r), splat(d));
                let b = _mm256_div_pd(_mm256_sub_pd(splat(hi), r), splat(d));
                t0 = _mm256_max_pd(t0, _mm256_min_pd(a, b));
                t1 = _mm256_min_pd(t1, _mm256_max_pd(a, b));
            }
        }
        // Sampled: t0 <= t1 and ⌈t0⌉ <= ⌊t1⌋ (i.e. start < end), where then
        // 0 <= t0 <= t1 <= w − 1 and `ceil_nonneg`, `floor_nonneg` are `ceil`, `floor`.
        let start = _mm256_ceil_pd(t0);
        let end = _mm256_floor_pd(t1);
        let live = _mm256_and_pd(
            _mm256_cmp_pd::<_CMP_LE_OQ>(t0, t1),
            _mm256_cmp_pd::<_CMP_LE_OQ>(start, end),
        );
        let mut live_lanes = _mm256_movemask_pd(live) as u32;
        if y + 4 > h {
            live_lanes &= (1 << (h - y)) - 1;
        }
        if live_lanes == 0 {
            continue;
        }
        let (mut ru_l, mut rv_l, mut start_l, mut end_l) = ([0.0; 4], [0.0; 4], [0.0; 4], [0.0; 4]);
        // SAFETY: each pointer is to a local array of four f64.
        unsafe {
            _mm256_storeu_pd(ru_l.as_mut_ptr(), ru);
            _mm256_storeu_pd(rv_l.as_mut_ptr(), rv);
            _mm256_storeu_pd(start_l.as_mut_ptr(), start);
            _mm256_storeu_pd(end_l.as_mut_ptr(), end);
        }
        while live_lanes != 0 {
            let l = live_lanes.trailing_zeros() as usize;
            live_lanes &= live_lanes - 1;
            let (start, end) = (start_l[l] as usize, end_l[l] as usize + 1);
            let (u, v) = rows.first_sample(start, ru_l[l], rv_l[l]);
            let row_start = (y + l) * w;
            let span = row_start + start..row_start + end;
            out[zeroed..span.start].fill(0.0);
            zeroed = span.end;
            sample_row(pairs, pw, u, v, rows.step, &mut out[span]);
        }
    }
    out[zeroed..].fill(0.0);
}

/// The vertical pairs of the padded box `bytes` (row length `pw`): entry `i` is
/// `bytes[i] | bytes[i + pw] << 8`, for the `ph − 1` rows that can hold a
/// footprint's top-left corner. One 32-bit load at entry `i` then holds the whole
/// 2×2 footprint, so [`sample_row`] needs one gather per eight pixels, not two.
///
/// # Panics
/// If `bytes` is not at least two rows and a [`TAIL`] long.
#[target_feature(enable = "avx2")]
fn pair_rows<'a>(bytes: &[u8], pw: usize, pairs: &'a mut Vec<u16>) -> &'a [u16] {
    let rows = (bytes.len() - TAIL) / pw;
    assert!(rows >= 2, "pair_rows: too few rows");
    let n = (rows - 1) * pw;
    // Whole blocks of 32: the last one starts before `n`, so it reads below byte
    // n + pw + 31 = rows · pw + 31 < bytes.len(), and writes past `n` into spare
    // entries.
    let blocks = n.div_ceil(32);
    if pairs.len() < blocks * 32 {
        pairs.resize(blocks * 32, 0);
    }
    for (k, dst) in pairs.chunks_exact_mut(32).take(blocks).enumerate() {
        let (top, bot) = (
            &bytes[k * 32..k * 32 + 32],
            &bytes[k * 32 + pw..k * 32 + pw + 32],
        );
        // SAFETY: `top` and `bot` are 32 bytes each, `dst` 32 entries of two bytes;
        // AVX2 is enabled on this function.
        unsafe {
            let t = _mm256_loadu_si256(top.as_ptr().cast());
            let b = _mm256_loadu_si256(bot.as_ptr().cast());
            // Interleaving works within 128-bit lanes: `lo` holds entries 0–7 and
            // 16–23, `hi` 8–15 and 24–31.
            let lo = _mm256_unpacklo_epi8(t, b);
            let hi = _mm256_unpackhi_epi8(t, b);
            let out = dst.as_mut_ptr().cast::<__m256i>();
            _mm256_storeu_si256(out, _mm256_permute2x128_si256::<0x20>(lo, hi));
            _mm256_storeu_si256(out.add(1), _mm256_permute2x128_si256::<0x31>(lo, hi));
        }
    }
    &pairs[..n]
}

/// As [`super::sample_row`], without the footprint map: samples `out.len()`
/// consecutive pixels of an output row from the vertical pairs `pairs` of the padded
/// box (row length `pw`; see [`pair_rows`]), starting at the 32.32 fixed-point buffer
/// coordinates `(u, v)` and stepping by `(su, sv)`. Each lane computes exactly what
/// the scalar loop does, in the same order and without fused operations, and every
/// sample is computed: a test for ink would be a branch on the gather's result,
/// which mispredicts too often.
///
/// # Panics
/// If `pairs` has fewer than two entries or more than `i32::MAX`.
#[target_feature(enable = "avx2")]
#[inline]
fn sample_row(pairs: &[u16], pw: usize, u: i64, v: i64, (su, sv): (i64, i64), out: &mut [f32]) {
    // Every lane's index is clamped to [0, max_base] before the gather, which reads
    // entries `base` and `base + 1`: it stays within `pairs` whatever the
    // coordinates. The caller's coordinates stay within [0.5, p − 1.5], whose
    // footprints lie in the box, so the clamp never changes a sample it stores.
    let max_base = pairs
        .len()
        .checked_sub(2)
        .and_then(|m| i32::try_from(m).ok())
        .expect("sample_row: pairs");
    let n = out.len();
    let src = pairs.as_ptr();
    // The coordinates of eight consecutive pixels live in two vectors of four 64-bit
    // lanes: pixels 0, 1, 4, 5 and 2, 3, 6, 7, so that taking the 32-bit halves of
    // both per 128-bit lane (`shuffle_ps`) lists the pixels in order. Lane k holds
    // u + k·su with wrapping arithmetic, exactly what k scalar steps give.
    let lanes = |x: i64, s: i64, k: [i64; 4]| {
        let at = |k: i64| x.wrapping_add(s.wrapping_mul(k));
        _mm256_set_epi64x(at(k[3]), at(k[2]), at(k[1]), at(k[0]))
    };
    let (mut ua, mut ub) = (lanes(u, su, [0, 1, 4, 5]), lanes(u, su, [2, 3, 6, 7]));
    let (mut va, mut vb) = (lanes(v, sv, [0, 1, 4, 5]), lanes(v, sv, [2, 3, 6, 7]));
    let step_u = _mm256_set1_epi64x(su.wrapping_mul(8));
    let step_v = _mm256_set1_epi64x(sv.wrapping_mul(8));
    let low = |a: __m256i, b: __m256i| {
        _mm256_castps_si256(_mm256_shuffle_ps::<0b10_00_10_00>(
            _mm256_castsi256_ps(a),
            _mm256_castsi256_ps(b),
        ))
    };
    let high = |a: __m256i, b: __m256i| {
        _mm256_castps_si256(_mm256_shuffle_ps::<0b11_01_11_01>(
            _mm256_castsi256_ps(a),
            _mm256_castsi256_ps(b),
        ))
    };
    // `(f as u32) as f32 · 2⁻³²` for the low words `f`: AVX2 converts only signed
    // integers, so convert the two 16-bit halves exactly and add them, which rounds
    // once, as the scalar conversion does.
    let weight = |f: __m256i| {
        let hi = _mm256_cvtepi32_ps(_mm256_srli_epi32::<16>(f));
        let lo = _mm256_cvtepi32_ps(_mm256_and_si256(f, _mm256_set1_epi32(0xffff)));
        _mm256_mul_ps(
            _mm256_add_ps(_mm256_mul_ps(hi, _mm256_set1_ps(65536.0)), lo),
            _mm256_set1_ps(FIXED_INV),
        )
    };
    // The INK table's values: `f32::from(p) * (1.0 / 255.0)`.
    let ink = |p: __m256i| {
        _mm256_mul_ps(
            _mm256_cvtepi32_ps(_mm256_and_si256(p, _mm256_set1_epi32(0xff))),
            _mm256_set1_ps(1.0 / 255.0),
        )
    };
    let lerp =
        |a: __m256, b: __m256, w: __m256| _mm256_add_ps(a, _mm256_mul_ps(w, _mm256_sub_ps(b, a)));
    let pwv = _mm256_set1_epi32(pw as i32);
    let maxv = _mm256_set1_epi32(max_base);
    let mut i = 0;
    while i < n {
        let (iu, fu) = (high(ua, ub), low(ua, ub));
        let (iv, fv) = (high(va, vb), low(va, vb));
        let base = _mm256_add_epi32(_mm256_mullo_epi32(iv, pwv), iu);
        let base = _mm256_min_epi32(_mm256_max_epi32(base, _mm256_setzero_si256()), maxv);
        // SAFETY: every lane of `base` is in [0, max_base], so the four bytes read at
        // entry `base` end at entry max_base + 1 = pairs.len() − 1; AVX2 is enabled
        // on this function.
        let quad = unsafe { _mm256_i32gather_epi32::<2>(src.cast::<i32>(), base) };
        // The bytes of `quad`, low to high: top left, bottom left, top right, bottom
        // right.
        let (a, c) = (ink(quad), ink(_mm256_srli_epi32::<8>(quad)));
        let (b, d) = (
            ink(_mm256_srli_epi32::<16>(quad)),
            ink(_mm256_srli_epi32::<24>(quad)),
        );
        let (wu, wv) = (weight(fu), weight(fv));
        let res = lerp(lerp(a, b, wu), lerp(c, d, wu), wv);
        let rest = n - i;
        if rest >= 8 {
            // SAFETY: i + 8 <= n = out.len(); AVX is implied by AVX2.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(i), res) };
        } else {
            let keep = _mm256_cmpgt_epi32(
                _mm256_set1_epi32(rest as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            );
            // SAFETY: i < n, and only the first `rest` = n − i lanes are written (the
            // masked ones are not accessed); AVX is implied by AVX2.
            unsafe { _mm256_maskstore_ps(out.as_mut_ptr().add(i), keep, res) };
        }
        ua = _mm256_add_epi64(ua, step_u);
        ub = _mm256_add_epi64(ub, step_u);
        va = _mm256_add_epi64(va, step_v);
        vb = _mm256_add_epi64(vb, step_v);
        i += 8;
    }
}
