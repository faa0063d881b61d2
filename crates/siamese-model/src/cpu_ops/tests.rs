//! Correctness of the custom ops against candle's stock ops, a naive max-pool and
//! finite differences.

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::conv::{ConvGeom, OutGrad, Plan, conv_bwd, conv_fwd, conv_fwd_pool};
use super::{conv2d_bias_relu, conv2d_bias_relu_pool2x2, max_pool2x2, max_pool2x2_stock};

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn randn(rng: &mut ChaCha8Rng, shape: &[usize], dtype: DType) -> Result<Tensor> {
    let len = shape.iter().product();
    let v: Vec<f64> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)
}

/// max |a - b| / max |b|.
fn rel_err(a: &Tensor, b: &Tensor) -> Result<f64> {
    assert_eq!(a.shape(), b.shape());
    let a = a.to_dtype(DType::F64)?.flatten_all()?;
    let b = b.to_dtype(DType::F64)?.flatten_all()?;
    let diff = (&a - &b)?.abs()?.max(0)?.to_scalar::<f64>()?;
    let scale = b.abs()?.max(0)?.to_scalar::<f64>()?;
    Ok(diff / scale.max(1e-30))
}

fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f64) -> Result<()> {
    let e = rel_err(a, b)?;
    assert!(e <= tol, "{what}: relative error {e:e} > {tol:e}");
    Ok(())
}

fn stock_conv(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    let y = x.conv2d(w, 0, 1, 1, 1)?;
    let y = y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?;
    if relu { y.relu() } else { Ok(y) }
}

/// (n, c, h, w, o, kh, kw): batch sizes, channels, kernel sizes, non-square.
const SHAPES: [(usize, usize, usize, usize, usize, usize, usize); 7] = [
    (1, 1, 5, 5, 1, 1, 1),
    (2, 3, 9, 7, 4, 3, 2),
    (3, 2, 12, 10, 5, 4, 4),
    (5, 4, 8, 8, 3, 2, 3),
    (1, 3, 6, 11, 2, 5, 1),
    (4, 8, 10, 9, 16, 4, 4),
    (7, 5, 7, 6, 6, 7, 6),
];

#[test]
fn conv_forward_and_grads_match_stock() -> Result<()> {
    let mut r = rng(1);
    for (i, &(n, c, h, w, o, kh, kw)) in SHAPES.iter().enumerate() {
        for relu in [false, true] {
            let what = format!("shape {i} relu {relu}");
            let x = Var::from_tensor(&randn(&mut r, &[n, c, h, w], DType::F32)?)?;
            let wt = Var::from_tensor(&randn(&mut r, &[o, c, kh, kw], DType::F32)?)?;
            let b = Var::from_tensor(&randn(&mut r, &[o], DType::F32)?)?;
            let ours = conv2d_bias_relu(&x, &wt, &b, relu, true)?;
            let stock = stock_conv(&x, &wt, &b, relu)?;
            assert_close(&format!("{what}: forward"), &ours, &stock, 1e-5)?;
            // A random linear functional of the output, so every gradient entry matters.
            let probe = randn(&mut r, ours.dims(), DType::F32)?;
            let g1 = (&ours * &probe)?.sum_all()?.backward()?;
            let g2 = (&stock * &probe)?.sum_all()?.backward()?;
            for (name, v) in [("x", &x), ("w", &wt), ("b", &b)] {
                let (a, e) = (g1.get(v).expect("our grad"), g2.get(v).expect("stock grad"));
                assert_close(&format!("{what}: grad {name}"), a, e, 1e-4)?;
            }
        }
    }
    Ok(())
}

/// The kernels under every way of cutting the work: row blocks of one image (with a
/// remainder), groups of images (with a remainder), in f32 and f64.
#[test]
fn conv_kernels_match_stock_for_all_plans() -> Result<()> {
    let mut r = rng(2);
    for &(n, c, h, w, o, kh, kw) in &SHAPES[1..] {
        let g = ConvGeom::new((n, c, h, w), (o, c, kh, kw))?;
        let mut plans = vec![Plan::new::<f32>(&g)];
        for rows in [1, 2, 3, g.oh] {
            plans.push(Plan {
                imgs: 1,
                rows,
                fft: false,
            });
        }
        for imgs in [2, 3, n] {
            plans.push(Plan {
                imgs,
                rows: g.oh,
                fft: false,
            });
        }
        for fft in [false, true] {
            plans.push(Plan {
                fft,
                ..Plan::new::<f32>(&g)
            });
        }
        for relu in [false, true] {
            let x = randn(&mut r, &[n, c, h, w], DType::F64)?;
            let wt = randn(&mut r, &[o, c, kh, kw], DType::F64)?;
            let b = randn(&mut r, &[o], DType::F64)?;
            let dy = randn(&mut r, &[n, o, g.oh, g.ow], DType::F64)?;
            // Reference gradients from candle's autograd on the stock ops.
            let (xv, wv, bv) = (
                Var::from_tensor(&x)?,
                Var::from_tensor(&wt)?,
                Var::from_tensor(&b)?,
            );
            let y_ref = stock_conv(&xv, &wv, &bv, relu)?;
            let grads = (&y_ref * &dy)?.sum_all()?.backward()?;
            let (dx_ref, dw_ref, db_ref) = (
                grads.get(&xv).unwrap().clone(),
                grads.get(&wv).unwrap().clone(),
                grads.get(&bv).unwrap().clone(),
            );
            for dtype in [DType::F32, DType::F64] {
                for &plan in &plans {
                    let what = format!("{g:?} {plan:?} relu {relu} {dtype:?}");
                    let tol = if dtype == DType::F32 { 1e-4 } else { 1e-10 };
                    let t = |t: &Tensor| t.to_dtype(dtype);
                    let (x, wt, b, dy) = (t(&x)?, t(&wt)?, t(&b)?, t(&dy)?);
                    let (y, grads) = if dtype == DType::F32 {
                        run_kernels::<f32>(&g, plan, &x, &wt, &b, &dy, relu)?
                    } else {
                        run_kernels::<f64>(&g, plan, &x, &wt, &b, &dy, relu)?
                    };
                    assert_close(&format!("{what}: y"), &y, &y_ref, tol)?;
                    assert_close(&format!("{what}: dx"), &grads[0], &dx_ref, tol)?;
                    assert_close(&format!("{what}: dw"), &grads[1], &dw_ref, tol)?;
                    assert_close(&format!("{what}: db"), &grads[2], &db_ref, tol)?;
                }
            }
        }
    }
    Ok(())
}

fn run_kernels<T: super::Real>(
    g: &ConvGeom,
    plan: Plan,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    dy: &Tensor,
    relu: bool,
) -> Result<(Tensor, [Tensor; 3])> {
    let v = |t: &Tensor| t.flatten_all()?.to_vec1::<T>();
    let (x, w, b, dy) = (v(x)?, v(w)?, v(b)?, v(dy)?);
    let y = conv_fwd(g, plan, &x, &w, &b, relu);
    let gr = conv_bwd(
        g,
        plan,
        &x,
        &w,
        OutGrad::Dense {
            y: &y,
            dy: &dy,
            relu,
        },
        true,
    );
    let dev = Device::Cpu;
    let y = Tensor::from_vec(y, (g.n, g.o, g.oh, g.ow), &dev)?;
    let dx = Tensor::from_vec(gr.dx.unwrap(), (g.n, g.c, g.h, g.w), &dev)?;
    let dw = Tensor::from_vec(gr.dw, (g.o, g.c, g.kh, g.kw), &dev)?;
    let db = Tensor::from_vec(gr.db, g.o, &dev)?;
    Ok((y, [dx, dw, db]))
}

/// At a pre-activation of exactly zero the fused ReLU passes no gradient; just above
/// zero it matches the stock ops.
#[test]
fn relu_gradient_at_zero() -> Result<()> {
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::ones((2, 1, 3, 4), DType::F32, &dev)?)?;
    let w = Var::from_tensor(&Tensor::ones((2, 1, 2, 2), DType::F32, &dev)?)?;
    // Channel 0: pre-activation exactly 0 everywhere; channel 1: 0.5 everywhere.
    let b = Var::from_tensor(&Tensor::new(&[-4f32, -3.5], &dev)?)?;
    let y = conv2d_bias_relu(&x, &w, &b, true, true)?;
    assert_eq!(y.i_channel(0)?.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
    let grads = y.sum_all()?.backward()?;
    let (dx, dw, db) = (
        grads.get(&x).unwrap(),
        grads.get(&w).unwrap(),
        grads.get(&b).unwrap(),
    );
    // Only channel 1 contributes: 2 images × 2×3 positions.
    assert_eq!(db.to_vec1::<f32>()?, [0.0, 12.0]);
    assert_eq!(dw.get(0)?.flatten_all()?.to_vec1::<f32>()?, [0.0; 4]);
    assert_eq!(dw.get(1)?.flatten_all()?.to_vec1::<f32>()?, [12.0; 4]);
    // dx = number of windows covering each pixel, from channel 1 only.
    let cover = [1f32, 2., 2., 1., 2., 4., 4., 2., 1., 2., 2., 1.];
    assert_eq!(dx.get(0)?.flatten_all()?.to_vec1::<f32>()?, cover);
    Ok(())
}

trait ChannelExt {
    fn i_channel(&self, c: usize) -> Result<Tensor>;
}
impl ChannelExt for Tensor {
    fn i_channel(&self, c: usize) -> Result<Tensor> {
        self.narrow(1, c, 1)
    }
}

#[test]
fn input_grad_flag() -> Result<()> {
    let mut r = rng(3);
    let x = Var::from_tensor(&randn(&mut r, &[2, 3, 8, 7], DType::F32)?)?;
    let w = Var::from_tensor(&randn(&mut r, &[4, 3, 3, 3], DType::F32)?)?;
    let b = Var::from_tensor(&randn(&mut r, &[4], DType::F32)?)?;
    for input_grad in [false, true] {
        let y = conv2d_bias_relu(&x, &w, &b, true, input_grad)?;
        let grads = y.sqr()?.sum_all()?.backward()?;
        assert_eq!(grads.get(&x).is_some(), input_grad);
        assert!(grads.get(&w).is_some() && grads.get(&b).is_some());
    }
    // A plain (untracked) input: the weights still get gradients.
    let y = conv2d_bias_relu(x.as_tensor().detach().as_ref(), &w, &b, false, true)?;
    let grads = y.sum_all()?.backward()?;
    assert!(grads.get(&w).is_some() && grads.get(&b).is_some());
    Ok(())
}

#[test]
fn non_contiguous_inputs() -> Result<()> {
    let mut r = rng(4);
    // (n, c, w, h) transposed into (n, c, h, w).
    let x = randn(&mut r, &[3, 2, 7, 9], DType::F32)?.transpose(2, 3)?;
    let w = randn(&mut r, &[2, 4, 2, 2], DType::F32)?.transpose(0, 1)?;
    let b = randn(&mut r, &[4, 3], DType::F32)?
        .narrow(1, 1, 1)?
        .squeeze(1)?;
    assert!(!x.is_contiguous() && !w.is_contiguous() && !b.is_contiguous());
    let ours = conv2d_bias_relu(&x, &w, &b, true, true)?;
    assert_close(
        "non-contiguous",
        &ours,
        &stock_conv(&x, &w, &b, true)?,
        1e-5,
    )
}

#[test]
fn other_dtypes_fall_back_to_stock() -> Result<()> {
    let mut r = rng(5);
    let x = randn(&mut r, &[2, 2, 6, 6], DType::F16)?;
    let w = randn(&mut r, &[3, 2, 3, 3], DType::F16)?;
    let b = randn(&mut r, &[3], DType::F16)?;
    let ours = conv2d_bias_relu(&x, &w, &b, true, true)?;
    assert_eq!(ours.dtype(), DType::F16);
    assert_close("f16", &ours, &stock_conv(&x, &w, &b, true)?, 0.0)?;
    let p = max_pool2x2(&x)?;
    assert_close("f16 pool", &p, &x.max_pool2d(2)?, 0.0)
}

/// A naive max-pool backward with the first-maximum rule.
fn naive_pool_bwd(x: &[f32], dy: &[f32], (n, c, h, w): (usize, usize, usize, usize)) -> Vec<f32> {
    let (oh, ow) = (h / 2, w / 2);
    let mut dx = vec![0f32; x.len()];
    for p in 0..n * c {
        for i in 0..oh {
            for j in 0..ow {
                let mut best = (2 * i) * w + 2 * j;
                for (di, dj) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let idx = (2 * i + di) * w + 2 * j + dj;
                    if x[p * h * w + idx] > x[p * h * w + best] {
                        best = idx;
                    }
                }
                dx[p * h * w + best] += dy[p * oh * ow + i * ow + j];
            }
        }
    }
    dx
}

#[test]
fn max_pool_matches_stock_and_naive() -> Result<()> {
    let mut r = rng(6);
    for (n, c, h, w) in [
        (1, 1, 2, 2),
        (2, 3, 8, 6),
        (3, 2, 7, 9),
        (1, 4, 5, 5),
        (2, 2, 3, 10),
    ] {
        for dtype in [DType::F32, DType::F64] {
            let what = format!("pool ({n}, {c}, {h}, {w}) {dtype:?}");
            let x = Var::from_tensor(&randn(&mut r, &[n, c, h, w], dtype)?)?;
            let ours = max_pool2x2(&x)?;
            let stock = x.max_pool2d(2)?;
            assert_eq!(ours.dims(), [n, c, h / 2, w / 2]);
            assert_close(&format!("{what}: forward"), &ours, &stock, 0.0)?;
            let probe = randn(&mut r, ours.dims(), dtype)?;
            let dx = (&ours * &probe)?
                .sum_all()?
                .backward()?
                .get(&x)
                .unwrap()
                .clone();
            let naive = naive_pool_bwd(
                &x.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
                &probe.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
                (n, c, h, w),
            );
            let naive = Tensor::from_vec(naive, (n, c, h, w), &Device::Cpu)?;
            assert_close(&format!("{what}: backward vs naive"), &dx, &naive, 1e-7)?;
            // The fallback for other devices and dtypes (random inputs: no ties).
            let fallback = max_pool2x2_stock(&x)?;
            assert_close(&format!("{what}: fallback forward"), &fallback, &stock, 0.0)?;
            let dxs = (&fallback * &probe)?
                .sum_all()?
                .backward()?
                .get(&x)
                .unwrap()
                .clone();
            assert_close(&format!("{what}: backward vs fallback"), &dx, &dxs, 1e-7)?;
        }
    }
    Ok(())
}

#[test]
fn max_pool_ties_go_to_the_first_maximum() -> Result<()> {
    let dev = Device::Cpu;
    // Windows (row-major): all equal; max at top-right and bottom-left; max at
    // bottom-left and bottom-right; plus a dropped odd column.
    #[rustfmt::skip]
    let x = Tensor::new(&[[[
        [1f32, 1., 0., 3., 2., 1.],
        [1.,   1., 3., 2., 5., 5.],
    ]]], &dev)?;
    let x = Var::from_tensor(&x.pad_with_zeros(3, 0, 1)?)?;
    let y = max_pool2x2(&x)?;
    assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [1., 3., 5.]);
    let g = Tensor::new(&[[[[10f32, 20., 30.]]]], &dev)?;
    let dx = (&y * &g)?.sum_all()?.backward()?.get(&x).unwrap().clone();
    #[rustfmt::skip]
    let want = [
        10f32, 0., 0., 20., 0., 0., 0.,
        0.,    0., 0., 0., 30., 0., 0.,
    ];
    assert_eq!(dx.flatten_all()?.to_vec1::<f32>()?, want);
    Ok(())
}

/// Central finite differences in f64 through conv → relu → pool → conv → weighted
/// sum, for every parameter and the input.
#[test]
fn finite_difference_gradients_of_a_tiny_network() -> Result<()> {
    let mut r = rng(7);
    let dt = DType::F64;
    let x = randn(&mut r, &[2, 2, 9, 8], dt)?;
    let w1 = randn(&mut r, &[3, 2, 3, 3], dt)?;
    let b1 = randn(&mut r, &[3], dt)?;
    let w2 = randn(&mut r, &[2, 3, 2, 2], dt)?;
    let b2 = randn(&mut r, &[2], dt)?;
    let probe = randn(&mut r, &[2, 2, 2, 2], dt)?;
    let loss = |p: &[Tensor]| -> Result<Tensor> {
        let h = conv2d_bias_relu(&p[0], &p[1], &p[2], true, true)?;
        let h = max_pool2x2(&h)?;
        let h = conv2d_bias_relu(&h, &p[3], &p[4], false, true)?;
        (h * &probe)?.sum_all()
    };
    check_finite_differences(&[&x, &w1, &b1, &w2, &b2], loss)
}

/// Why [`max_pool2x2_stock`] exists: candle 0.11.1's `max_pool2d` backward scales the
/// gradient by 1/4 (without ties). If this fails, candle has fixed it and the fallback
/// could go back to `max_pool2d`.
#[test]
fn stock_max_pool_backward_is_scaled_by_a_quarter() -> Result<()> {
    let x = Var::from_tensor(&randn(&mut rng(8), &[1, 2, 4, 6], DType::F32)?)?;
    let ours = max_pool2x2(&x)?
        .sum_all()?
        .backward()?
        .get(&x)
        .unwrap()
        .clone();
    let stock = x
        .max_pool2d(2)?
        .sum_all()?
        .backward()?
        .get(&x)
        .unwrap()
        .clone();
    assert_close("stock x 4", &(stock * 4.0)?, &ours, 1e-7)
}

/// The fused conv → ReLU → pool against the two separate ops, through autograd (odd
/// and even conv outputs) and for several plans at the kernel level.
#[test]
fn fused_pool_matches_separate_ops() -> Result<()> {
    let mut r = rng(9);
    for (i, &(n, c, h, w, o, kh, kw)) in SHAPES[1..].iter().enumerate() {
        if h - kh < 1 || w - kw < 1 {
            continue; // a 1-wide output has no 2×2 window
        }
        let what = format!("shape {i}");
        let x = Var::from_tensor(&randn(&mut r, &[n, c, h, w], DType::F32)?)?;
        let wt = Var::from_tensor(&randn(&mut r, &[o, c, kh, kw], DType::F32)?)?;
        let b = Var::from_tensor(&randn(&mut r, &[o], DType::F32)?)?;
        let fused = conv2d_bias_relu_pool2x2(&x, &wt, &b, true)?;
        let separate = max_pool2x2(&conv2d_bias_relu(&x, &wt, &b, true, true)?)?;
        assert_close(&format!("{what}: forward"), &fused, &separate, 0.0)?;
        let probe = randn(&mut r, fused.dims(), DType::F32)?;
        let g1 = (&fused * &probe)?.sum_all()?.backward()?;
        let g2 = (&separate * &probe)?.sum_all()?.backward()?;
        for (name, v) in [("x", &x), ("w", &wt), ("b", &b)] {
            let (a, e) = (g1.get(v).unwrap(), g2.get(v).unwrap());
            assert_close(&format!("{what}: grad {name}"), a, e, 1e-6)?;
        }
        // Kernel level, several ways of cutting the work.
        let g = ConvGeom::new((n, c, h, w), (o, c, kh, kw))?;
        let v = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let (xs, ws, bs, ps) = (v(&x)?, v(&wt)?, v(&b)?, v(&probe)?);
        let (dx, dw) = (v(g1.get(&x).unwrap())?, v(g1.get(&wt).unwrap())?);
        let plans = [
            Plan {
                imgs: 1,
                rows: 1,
                fft: false,
            },
            Plan {
                imgs: 1,
                rows: 3,
                fft: false,
            },
            Plan {
                imgs: 2,
                rows: g.oh,
                fft: false,
            },
        ];
        for plan in plans {
            let (y, codes) = conv_fwd_pool(&g, plan, &xs, &ws, &bs);
            assert_eq!(y, v(&fused)?, "{what} {plan:?}");
            let out = OutGrad::Pooled {
                res: &y,
                dy: &ps,
                codes: &codes,
            };
            let gr = conv_bwd(&g, plan, &xs, &ws, out, true);
            let err =
                |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err(&gr.dx.unwrap(), &dx) < 1e-5, "{what} {plan:?} dx");
            assert!(err(&gr.dw, &dw) < 1e-4, "{what} {plan:?} dw");
        }
    }
    // Without input gradient.
    let x = Var::from_tensor(&randn(&mut r, &[2, 1, 9, 9], DType::F32)?)?;
    let wt = Var::from_tensor(&randn(&mut r, &[3, 1, 2, 2], DType::F32)?)?;
    let b = Var::from_tensor(&randn(&mut r, &[3], DType::F32)?)?;
    let grads = conv2d_bias_relu_pool2x2(&x, &wt, &b, false)?
        .sum_all()?
        .backward()?;
    assert!(grads.get(&x).is_none() && grads.get(&wt).is_some());
    Ok(())
}

/// The same check through the fused conv → ReLU → pool.
#[test]
fn finite_difference_gradients_of_a_tiny_network_fused() -> Result<()> {
    let mut r = rng(7);
    let dt = DType::F64;
    let x = randn(&mut r, &[2, 2, 9, 8], dt)?;
    let w1 = randn(&mut r, &[3, 2, 3, 3], dt)?;
    let b1 = randn(&mut r, &[3], dt)?;
    let w2 = randn(&mut r, &[2, 3, 2, 2], dt)?;
    let b2 = randn(&mut r, &[2], dt)?;
    let probe = randn(&mut r, &[2, 2, 2, 2], dt)?;
    let loss = |p: &[Tensor]| -> Result<Tensor> {
        let h = conv2d_bias_relu_pool2x2(&p[0], &p[1], &p[2], true)?;
        let h = conv2d_bias_relu(&h, &p[3], &p[4], false, true)?;
        (h * &probe)?.sum_all()
    };
    check_finite_differences(&[&x, &w1, &b1, &w2, &b2], loss)
}

/// The fused fully connected sigmoid layer against candle's `Linear` + `sigmoid`:
/// forward and all three gradients, f32 and f64.
#[test]
fn linear_sigmoid_matches_stock() -> Result<()> {
    use candle_core::Module;
    let mut r = rng(7);
    for &(n, k, m) in &[(1, 1, 1), (3, 17, 5), (8, 96, 40)] {
        for dtype in [DType::F32, DType::F64] {
            let x = Var::from_tensor(&randn(&mut r, &[n, k], dtype)?)?;
            let w = Var::from_tensor(&(randn(&mut r, &[m, k], dtype)? * 0.3)?)?;
            let b = Var::from_tensor(&randn(&mut r, &[m], dtype)?)?;
            let ours = super::linear_sigmoid(&x, &w, &b)?;
            let linear = candle_nn::Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
            let stock = candle_nn::ops::sigmoid(&linear.forward(&x)?)?;
            let what = format!("linear-sigmoid ({n}, {k}) -> {m} {dtype:?}");
            let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
            assert_close(&format!("{what}: forward"), &ours, &stock, tol)?;
            let probe = randn(&mut r, &[n, m], dtype)?;
            let g1 = (&ours * &probe)?.sum_all()?.backward()?;
            let g2 = (&stock * &probe)?.sum_all()?.backward()?;
            for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
                let (a, e) = (g1.get(v).expect("our grad"), g2.get(v).expect("stock grad"));
                assert_close(&format!("{what}: grad {name}"), a, e, tol * 10.0)?;
            }
        }
    }
    // A shape mismatch is an error, not a panic.
    let x = Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?;
    let w = Tensor::zeros((4, 5), DType::F32, &Device::Cpu)?;
    let b = Tensor::zeros(4, DType::F32, &Device::Cpu)?;
    assert!(super::linear_sigmoid(&x, &w, &b).is_err());
    Ok(())
}

/// The cost model picks the FFT for conv2 of the Koch network at training batch
/// sizes, and im2col + gemm for the other layers and for small batches.
#[test]
fn fft_is_chosen_where_it_was_measured_to_pay() -> Result<()> {
    let geom = |n, (c, h, o, k)| ConvGeom::new((n, c, h, h), (o, c, k, k));
    let koch = [
        (1, 105, 64, 10),
        (64, 48, 128, 7),
        (128, 21, 128, 4),
        (128, 9, 256, 4),
    ];
    for n in [64, 256] {
        let chosen: Vec<bool> = koch
            .iter()
            .map(|&l| Ok(super::fft::pays(&geom(n, l)?)))
            .collect::<Result<_>>()?;
        assert_eq!(chosen, [false, true, false, false], "{n} images");
    }
    assert!(!super::fft::pays(&geom(2, koch[1])?));
    Ok(())
}

/// The FFT forward pass can keep its spectra for the backward pass: the gradients
/// are the same bits as when the backward pass recomputes them.
#[test]
fn fft_backward_with_kept_spectra_is_identical() -> Result<()> {
    use super::conv::{conv_bwd_kept, conv_fwd_pool_keep};
    let mut r = rng(11);
    let g = ConvGeom::new((3, 4, 12, 12), (5, 4, 3, 3))?;
    let plan = Plan {
        fft: true,
        ..Plan::new::<f32>(&g)
    };
    let v = |shape: &[usize], r: &mut ChaCha8Rng| -> Result<Vec<f32>> {
        randn(r, shape, DType::F32)?.flatten_all()?.to_vec1()
    };
    let (x, w, b) = (
        v(&[3, 4, 12, 12], &mut r)?,
        v(&[5, 4, 3, 3], &mut r)?,
        v(&[5], &mut r)?,
    );
    let dy = v(&[3, 5, 5, 5], &mut r)?;
    let (y1, c1, kept) = conv_fwd_pool_keep(&g, plan, &x, &w, &b, true);
    assert!(kept.is_some(), "an FFT forward pass asked to keep keeps");
    let (y2, c2) = conv_fwd_pool(&g, plan, &x, &w, &b);
    assert_eq!((&y1, &c1), (&y2, &c2));
    let with = OutGrad::Pooled {
        res: &y1,
        dy: &dy,
        codes: &c1,
    };
    let with = conv_bwd_kept(&g, plan, &x, &w, with, true, kept);
    let without = OutGrad::Pooled {
        res: &y2,
        dy: &dy,
        codes: &c2,
    };
    let without = conv_bwd(&g, plan, &x, &w, without, true);
    assert_eq!(with.dw, without.dw);
    assert_eq!(with.db, without.db);
    assert_eq!(with.dx, without.dx);
    Ok(())
}

/// Central differences (step 10⁻⁶, f64) of the scalar `loss` against the gradients
/// candle's autograd gives for each of `params`, to 10⁻⁶ of the largest derivative.
fn check_finite_differences(
    params: &[&Tensor],
    loss: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<()> {
    let vars = params
        .iter()
        .map(|t| Var::from_tensor(t))
        .collect::<Result<Vec<_>>>()?;
    let params: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let grads = loss(&params)?.backward()?;
    let eps = 1e-6;
    for (i, v) in vars.iter().enumerate() {
        let analytic = grads.get(v).unwrap().flatten_all()?.to_vec1::<f64>()?;
        let base = v.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        let mut numeric = vec![0f64; base.len()];
        for (j, num) in numeric.iter_mut().enumerate() {
            let at = |d: f64| -> Result<f64> {
                let mut p = base.clone();
                p[j] += d;
                let mut ps: Vec<Tensor> = params.iter().map(|t| t.detach()).collect();
                ps[i] = Tensor::from_vec(p, v.shape(), &Device::Cpu)?;
                loss(&ps)?.to_scalar::<f64>()
            };
            *num = (at(eps)? - at(-eps)?) / (2.0 * eps);
        }
        let scale = numeric.iter().fold(0f64, |m, v| m.max(v.abs()));
        let err = analytic
            .iter()
            .zip(&numeric)
            .fold(0f64, |m, (a, n)| m.max((a - n).abs()));
        assert!(
            err <= 1e-6 * scale.max(1.0),
            "param {i}: max error {err:e} (scale {scale})"
        );
    }
    Ok(())
}

mod batch_norm {
    use super::*;
    use crate::cpu_ops::{
        BatchNormStats, batch_norm_relu_pool2x2, batch_norm_relu_pool2x2_stock,
        conv_bn_relu_pool2x2,
    };

    /// (n, c, h, w): odd sizes (a dropped last row / column), one image, one channel.
    const BN_SHAPES: [(usize, usize, usize, usize); 5] = [
        (2, 3, 4, 4),
        (3, 2, 7, 5),
        (1, 4, 6, 9),
        (5, 1, 3, 3),
        (4, 8, 14, 14),
    ];

    fn gamma_beta(r: &mut ChaCha8Rng, c: usize, dtype: DType) -> Result<(Tensor, Tensor)> {
        // Some scales negative, so that the window's maximum is the input's minimum.
        let g: Vec<f64> = (0..c)
            .map(|i| {
                let m = r.random_range(0.5..1.5);
                if i % 3 == 2 { -m } else { m }
            })
            .collect();
        let b: Vec<f64> = (0..c).map(|_| r.random_range(-0.5..0.5)).collect();
        Ok((
            Tensor::from_vec(g, c, &Device::Cpu)?.to_dtype(dtype)?,
            Tensor::from_vec(b, c, &Device::Cpu)?.to_dtype(dtype)?,
        ))
    }

    #[test]
    fn fused_batch_norm_matches_stock_in_both_modes() -> Result<()> {
        let mut r = rng(7);
        for &(n, c, h, w) in &BN_SHAPES {
            let x = Var::from_tensor(&randn(&mut r, &[n, c, h, w], DType::F32)?)?;
            let (g, b) = gamma_beta(&mut r, c, DType::F32)?;
            let (g, b) = (Var::from_tensor(&g)?, Var::from_tensor(&b)?);
            let dy = randn(&mut r, &[n, c, h / 2, w / 2], DType::F32)?;
            let mean: Vec<f32> = (0..c).map(|i| 0.1 * i as f32 - 0.2).collect();
            let var: Vec<f32> = (0..c).map(|i| 0.5 + 0.25 * i as f32).collect();
            let modes = [
                BatchNormStats::Batch,
                BatchNormStats::Running {
                    mean: &mean,
                    var: &var,
                },
            ];
            for stats in modes {
                let what = format!("{:?} {stats:?}", (n, c, h, w));
                let fused = batch_norm_relu_pool2x2(&x, &g, &b, stats, 1e-5)?;
                let stock = batch_norm_relu_pool2x2_stock(&x, &g, &b, stats, 1e-5)?;
                let vars = [("x", &*x), ("γ", &*g), ("β", &*b)];
                same_outputs_and_gradients(&what, fused, stock, &dy, &vars, [1e-5, 1e-5, 1e-4])?;
            }
        }
        Ok(())
    }

    /// Asserts that two `(output, batch statistics)` agree (forward to `tol[0]`,
    /// statistics to `tol[1]` relative), and the gradients of `Σ output·dy` with
    /// respect to each of `vars` (to `tol[2]`).
    fn same_outputs_and_gradients(
        what: &str,
        (fused, fs): (Tensor, Option<crate::cpu_ops::ChannelStats>),
        (stock, ss): (Tensor, Option<crate::cpu_ops::ChannelStats>),
        dy: &Tensor,
        vars: &[(&str, &Tensor)],
        tol: [f64; 3],
    ) -> Result<()> {
        assert_close(&format!("{what} forward"), &fused, &stock, tol[0])?;
        match (fs, ss) {
            (Some((fm, fv)), Some((sm, sv))) => {
                for (a, e) in fm.iter().zip(&sm).chain(fv.iter().zip(&sv)) {
                    let ok = (a - e).abs() < tol[1] * e.abs().max(1.0);
                    assert!(ok, "{what}: statistics {a} vs {e}");
                }
            }
            (None, None) => {}
            other => panic!("{what}: statistics {other:?}"),
        }
        let gf = (fused * dy)?.sum_all()?.backward()?;
        let gs = (stock * dy)?.sum_all()?.backward()?;
        for (name, v) in vars {
            let (a, e) = (gf.get(v).unwrap(), gs.get(v).unwrap());
            assert_close(&format!("{what} d{name}"), a, e, tol[2])?;
        }
        Ok(())
    }

    #[test]
    fn batch_norm_matches_a_hand_computation() -> Result<()> {
        // One channel, two 2×2 images: one window each.
        let x = Tensor::new(
            &[[[[1f64, 2.], [3., 4.]]], [[[0., -2.], [6., 2.]]]],
            &Device::Cpu,
        )?;
        let (g, b) = (
            Tensor::new(&[2f64], &Device::Cpu)?,
            Tensor::new(&[0.5f64], &Device::Cpu)?,
        );
        let values = [1., 2., 3., 4., 0., -2., 6., 2.];
        let mean = values.iter().sum::<f64>() / 8.0; // 2
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 8.0; // 42 / 8
        assert_eq!((mean, var), (2.0, 5.25));
        let eps = 1e-5;
        let z = |v: f64| 2.0 * (v - mean) / (var + eps).sqrt() + 0.5;
        let (y, stats) = batch_norm_relu_pool2x2(&x, &g, &b, BatchNormStats::Batch, eps)?;
        let y = y.flatten_all()?.to_vec1::<f64>()?;
        assert!(
            (y[0] - z(4.0)).abs() < 1e-12 && (y[1] - z(6.0)).abs() < 1e-12,
            "{y:?}"
        );
        let (m, v) = stats.unwrap();
        assert!((m[0] - 2.0).abs() < 1e-12 && (v[0] - 5.25).abs() < 1e-12);
        // Inference: the given statistics, a window whose maximum is negative gives 0.
        let running = BatchNormStats::Running {
            mean: &[10.0],
            var: &[4.0],
        };
        let (y, none) = batch_norm_relu_pool2x2(&x, &g, &b, running, 0.0)?;
        assert!(none.is_none());
        let y = y.flatten_all()?.to_vec1::<f64>()?;
        // max over window 1: 2·(4 − 10)/2 + 0.5 < 0 → 0; window 2: 2·(6 − 10)/2 + 0.5 < 0.
        assert_eq!(y, [0.0, 0.0]);
        Ok(())
    }

    /// `(n, c, h, w, o, pad)`: odd sizes, one image, one channel, no padding.
    const BLOCK_SHAPES: [(usize, usize, usize, usize, usize, usize); 5] = [
        (2, 1, 8, 8, 3, 1),
        (3, 2, 7, 5, 4, 1),
        (1, 3, 6, 9, 2, 0),
        (5, 4, 3, 3, 1, 1),
        (4, 8, 14, 14, 6, 1),
    ];

    /// The reference of [`conv_bn_relu_pool2x2`]: candle's padded `conv2d`, then the
    /// stock batch norm, ReLU and pool.
    fn block_stock(
        x: &Tensor,
        w: &Tensor,
        (g, b): (&Tensor, &Tensor),
        pad: usize,
        stats: BatchNormStats<'_>,
    ) -> Result<(Tensor, Option<crate::cpu_ops::ChannelStats>)> {
        let y = x.conv2d(w, pad, 1, 1, 1)?;
        batch_norm_relu_pool2x2_stock(&y, g, b, stats, 1e-5)
    }

    #[test]
    fn fused_block_matches_stock_in_both_modes() -> Result<()> {
        let mut r = rng(13);
        for &(n, c, h, wd, o, pad) in &BLOCK_SHAPES {
            let x = Var::from_tensor(&randn(&mut r, &[n, c, h, wd], DType::F32)?)?;
            let w = Var::from_tensor(&randn(&mut r, &[o, c, 3, 3], DType::F32)?)?;
            let (g, b) = gamma_beta(&mut r, o, DType::F32)?;
            let (g, b) = (Var::from_tensor(&g)?, Var::from_tensor(&b)?);
            let (oh, ow) = (h + 2 * pad - 2, wd + 2 * pad - 2);
            let dy = randn(&mut r, &[n, o, oh / 2, ow / 2], DType::F32)?;
            let mean: Vec<f32> = (0..o).map(|i| 0.1 * i as f32 - 0.2).collect();
            let var: Vec<f32> = (0..o).map(|i| 0.5 + 0.25 * i as f32).collect();
            let modes = [
                BatchNormStats::Batch,
                BatchNormStats::Running {
                    mean: &mean,
                    var: &var,
                },
            ];
            for stats in modes {
                let what = format!("{:?} {stats:?}", (n, c, h, wd, o, pad));
                let fused = conv_bn_relu_pool2x2(&x, &w, &g, &b, pad, stats, 1e-5, true)?;
                let stock = block_stock(&x, &w, (&g, &b), pad, stats)?;
                let vars = [("x", &*x), ("w", &*w), ("γ", &*g), ("β", &*b)];
                same_outputs_and_gradients(&what, fused, stock, &dy, &vars, [1e-4, 1e-4, 1e-3])?;
            }
        }
        Ok(())
    }

    #[test]
    fn fused_block_without_input_gradient_leaves_the_input_alone() -> Result<()> {
        let mut r = rng(17);
        let x = Var::from_tensor(&randn(&mut r, &[2, 1, 6, 6], DType::F32)?)?;
        let w = Var::from_tensor(&randn(&mut r, &[3, 1, 3, 3], DType::F32)?)?;
        let (g, b) = gamma_beta(&mut r, 3, DType::F32)?;
        let stats = BatchNormStats::Batch;
        let (y, _) = conv_bn_relu_pool2x2(&x, &w, &g, &b, 1, stats, 1e-5, false)?;
        let grads = y.sum_all()?.backward()?;
        assert!(grads.get(x.as_tensor()).is_none());
        assert!(grads.get(w.as_tensor()).is_some());
        Ok(())
    }

    #[test]
    fn fused_block_gradients_match_finite_differences() -> Result<()> {
        let mut r = rng(19);
        for &(n, c, h, wd, o, pad) in &BLOCK_SHAPES[..4] {
            let x = randn(&mut r, &[n, c, h, wd], DType::F64)?;
            let w = randn(&mut r, &[o, c, 3, 3], DType::F64)?;
            let (g, b) = gamma_beta(&mut r, o, DType::F64)?;
            let (oh, ow) = (h + 2 * pad - 2, wd + 2 * pad - 2);
            let dy = randn(&mut r, &[n, o, oh / 2, ow / 2], DType::F64)?;
            let (mean, var): (Vec<f32>, Vec<f32>) = (vec![0.1; o], vec![0.7; o]);
            for train in [true, false] {
                let stats = if train {
                    BatchNormStats::Batch
                } else {
                    BatchNormStats::Running {
                        mean: &mean,
                        var: &var,
                    }
                };
                check_finite_differences(&[&x, &w, &g, &b], |p| {
                    let (y, _) =
                        conv_bn_relu_pool2x2(&p[0], &p[1], &p[2], &p[3], pad, stats, 1e-5, true)?;
                    (y * &dy)?.sum_all()
                })?;
            }
        }
        Ok(())
    }

    #[test]
    fn batch_norm_gradients_match_finite_differences() -> Result<()> {
        let mut r = rng(11);
        for &(n, c, h, w) in &BN_SHAPES[..4] {
            let x = randn(&mut r, &[n, c, h, w], DType::F64)?;
            let (g, b) = gamma_beta(&mut r, c, DType::F64)?;
            let dy = randn(&mut r, &[n, c, h / 2, w / 2], DType::F64)?;
            let mean: Vec<f32> = vec![0.1; c];
            let var: Vec<f32> = vec![0.7; c];
            for train in [true, false] {
                let stats = if train {
                    BatchNormStats::Batch
                } else {
                    BatchNormStats::Running {
                        mean: &mean,
                        var: &var,
                    }
                };
                check_finite_differences(&[&x, &g, &b], |p| {
                    let (y, _) = batch_norm_relu_pool2x2(&p[0], &p[1], &p[2], stats, 1e-5)?;
                    (y * &dy)?.sum_all()
                })?;
            }
        }
        Ok(())
    }
}
