//! Throughput of the custom ops on the Koch et al. shapes. Ignored tests; run with
//! `cargo test --release -p siamese-model --lib cpu_ops::bench -- --ignored --nocapture`
//! (`CPU_OPS_BENCH_N` images, default 64; `CPU_OPS_BENCH_STOCK_N` for candle's stock
//! ops, default 4; `CPU_OPS_BENCH_REPS` repetitions, minimum taken, default 3).

use std::time::Instant;

use candle_core::{Device, Result, Tensor, Var};

use super::conv::{ConvGeom, OutGrad, Plan, conv_bwd, conv_fwd, conv_fwd_pool};
use super::{conv2d_bias_relu, conv2d_bias_relu_pool2x2, max_pool2x2, max_pool2x2_stock};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The four convolutions of the 105×105 network: (c, h, o, k); pools in between.
const KOCH: [(usize, usize, usize, usize); 4] = [
    (1, 105, 64, 10),
    (64, 48, 128, 7),
    (128, 21, 128, 4),
    (128, 9, 256, 4),
];

/// Whether to run layer `i` (0-based): `CPU_OPS_BENCH_LAYERS`, e.g. "2,3" (1-based).
fn wanted(i: usize) -> bool {
    std::env::var("CPU_OPS_BENCH_LAYERS")
        .map(|v| v.split(',').any(|l| l.trim() == (i + 1).to_string()))
        .unwrap_or(true)
}

fn geom(n: usize, (c, h, o, k): (usize, usize, usize, usize)) -> ConvGeom {
    ConvGeom::new((n, c, h, h), (o, c, k, k)).unwrap()
}

fn dense<'a>(y: &'a [f32], dy: &'a [f32]) -> OutGrad<'a, f32> {
    OutGrad::Dense { y, dy, relu: true }
}

fn data(len: usize, seed: u32) -> Vec<f32> {
    // A cheap deterministic pseudo-random sequence in [-1, 1).
    let mut s = seed.wrapping_mul(2654435761).max(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

/// This process's user + system CPU time in seconds (from /proc, 10 ms ticks).
fn cpu_time() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    if f.len() > 12 {
        (f[11] + f[12]) / 100.0
    } else {
        0.0
    }
}

/// Minimum wall time of `reps` runs after a warm-up. Other processes may load the
/// machine; if they do, the printed CPU-time rate (flops over CPU seconds per
/// thread) tells what the kernel does when it runs.
fn time_min(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up: buffers, page faults, rayon threads
    let (c0, t0) = (cpu_time(), Instant::now());
    let best = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    let (cpu, wall) = (cpu_time() - c0, t0.elapsed().as_secs_f64());
    let threads = rayon::current_num_threads() as f64;
    LAST_CPU_RATIO.set(cpu / (wall * threads));
    best
}

thread_local! {
    /// CPU time over (wall time × threads) of the last `time_min`: 1 when the
    /// machine was ours alone.
    static LAST_CPU_RATIO: std::cell::Cell<f64> = const { std::cell::Cell::new(1.0) };
}

fn busy() -> String {
    format!("[cpu {:3.0}%]", LAST_CPU_RATIO.get() * 100.0)
}

/// The kernels alone, per layer, with the default plan.
#[test]
#[ignore]
fn bench_conv_kernels() {
    let n = env("CPU_OPS_BENCH_N", 64);
    let reps = env("CPU_OPS_BENCH_REPS", 3);
    eprintln!(
        "conv kernels, {n} images, f32, {} threads",
        rayon::current_num_threads()
    );
    let (mut tf, mut tb, mut fl) = (0.0, 0.0, 0.0);
    for (i, &layer) in KOCH.iter().enumerate().filter(|(i, _)| wanted(*i)) {
        let g = geom(n, layer);
        let plan = Plan::new::<f32>(&g);
        let x = data(n * g.x_img(), 1);
        let w: Vec<f32> = data(g.o * g.k(), 2).iter().map(|v| v * 0.05).collect();
        let b = data(g.o, 3);
        let dy = data(n * g.y_img(), 4);
        let mut y = Vec::new();
        let fwd = time_min(reps, || y = conv_fwd(&g, plan, &x, &w, &b, true));
        let fbusy = busy();
        let input_grad = i > 0;
        let bwd = time_min(reps, || {
            std::hint::black_box(conv_bwd(&g, plan, &x, &w, dense(&y, &dy), input_grad));
        });
        let bbusy = busy();
        let bflops = g.flops() * if input_grad { 2.0 } else { 1.0 };
        eprintln!(
            "conv{}: {plan:?} fwd {:7.1} ms {:6.1} GFLOP/s {fbusy} | bwd {:7.1} ms {:6.1} GFLOP/s {bbusy}",
            i + 1,
            fwd * 1e3,
            g.flops() / fwd / 1e9,
            bwd * 1e3,
            bflops / bwd / 1e9
        );
        (tf, tb, fl) = (tf + fwd, tb + bwd, fl + g.flops() + bflops);
    }
    eprintln!(
        "total: fwd {:.0} ms, bwd {:.0} ms, fwd+bwd {:.0} ms, {:.1} GFLOP/s",
        tf * 1e3,
        tb * 1e3,
        (tf + tb) * 1e3,
        fl / (tf + tb) / 1e9
    );
}

/// The kernels with the max-pool fused (layers 1–3), per layer.
#[test]
#[ignore]
fn bench_conv_pool_kernels() {
    let n = env("CPU_OPS_BENCH_N", 64);
    let reps = env("CPU_OPS_BENCH_REPS", 3);
    for (i, &layer) in KOCH.iter().enumerate().take(3).filter(|(i, _)| wanted(*i)) {
        let g = geom(n, layer);
        let plan = Plan::new::<f32>(&g);
        let x = data(n * g.x_img(), 1);
        let w: Vec<f32> = data(g.o * g.k(), 2).iter().map(|v| v * 0.05).collect();
        let b = data(g.o, 3);
        let dy = data(n * g.o * (g.oh / 2) * (g.ow / 2), 4);
        let (mut y, mut codes) = (Vec::new(), Vec::new());
        let fwd = time_min(reps, || (y, codes) = conv_fwd_pool(&g, plan, &x, &w, &b));
        let fbusy = busy();
        let bwd = time_min(reps, || {
            let out = OutGrad::Pooled {
                res: &y,
                dy: &dy,
                codes: &codes,
            };
            std::hint::black_box(conv_bwd(&g, plan, &x, &w, out, i > 0));
        });
        let bflops = g.flops() * if i > 0 { 2.0 } else { 1.0 };
        eprintln!(
            "conv{}+pool: fwd {:7.1} ms {:6.1} GFLOP/s {fbusy} | bwd {:7.1} ms {:6.1} GFLOP/s {}",
            i + 1,
            fwd * 1e3,
            g.flops() / fwd / 1e9,
            bwd * 1e3,
            bflops / bwd / 1e9,
            busy()
        );
    }
}

/// Sweeps the im2col buffer size per layer (forward and backward).
#[test]
#[ignore]
fn bench_conv_plans() {
    let n = env("CPU_OPS_BENCH_N", 64);
    let reps = env("CPU_OPS_BENCH_REPS", 3);
    for (i, &layer) in KOCH.iter().enumerate().filter(|(i, _)| wanted(*i)) {
        let g = geom(n, layer);
        let x = data(n * g.x_img(), 1);
        let w: Vec<f32> = data(g.o * g.k(), 2).iter().map(|v| v * 0.05).collect();
        let b = data(g.o, 3);
        let dy = data(n * g.y_img(), 4);
        let mut last = None;
        for kib in [256, 512, 768, 1024, 1536, 2048, 3072, 4096, 8192] {
            let plan = Plan::with_col_bytes(&g, 4, kib << 10);
            if last == Some(plan) {
                continue;
            }
            last = Some(plan);
            let mut y = Vec::new();
            let fwd = time_min(reps, || y = conv_fwd(&g, plan, &x, &w, &b, true));
            let fbusy = busy();
            let bwd = time_min(reps, || {
                std::hint::black_box(conv_bwd(&g, plan, &x, &w, dense(&y, &dy), i > 0));
            });
            let bflops = g.flops() * if i > 0 { 2.0 } else { 1.0 };
            eprintln!(
                "conv{} {kib:5} KiB {plan:?}: fwd {:6.1} GFLOP/s {fbusy}, bwd {:6.1} GFLOP/s {}",
                i + 1,
                g.flops() / fwd / 1e9,
                bflops / bwd / 1e9,
                busy()
            );
        }
    }
}

/// One tower's convolutions and pools, forward and backward through candle's
/// autograd: ours at `CPU_OPS_BENCH_N` images, candle's stock ops at
/// `CPU_OPS_BENCH_STOCK_N`, per layer.
#[test]
#[ignore]
fn bench_autograd_vs_stock() -> Result<()> {
    let n = env("CPU_OPS_BENCH_N", 64);
    let sn = env("CPU_OPS_BENCH_STOCK_N", 4);
    let reps = env("CPU_OPS_BENCH_REPS", 3);
    for (label, n) in [("fused", n), ("ours", n), ("stock", sn)] {
        let (stock, fused) = (label == "stock", label == "fused");
        let mut total = (0.0, 0.0, 0.0);
        for (i, &layer) in KOCH.iter().enumerate() {
            let g = geom(n, layer);
            let dev = Device::Cpu;
            let x = Tensor::from_vec(data(n * g.x_img(), 1), (n, g.c, g.h, g.w), &dev)?;
            let x = if i > 0 {
                Var::from_tensor(&x)?.as_tensor().clone()
            } else {
                x
            };
            let w = Tensor::from_vec(data(g.o * g.k(), 2), (g.o, g.c, g.kh, g.kw), &dev)?;
            let w = Var::from_tensor(&(w * 0.05)?)?;
            let b = Var::from_tensor(&Tensor::from_vec(data(g.o, 3), g.o, &dev)?)?;
            let probe = Tensor::from_vec(data(n * g.y_img(), 4), g.y_shape(), &dev)?;
            // The network pools after the first three convolutions.
            let pool = i < 3;
            let probe = if pool { max_pool2x2(&probe)? } else { probe };
            let forward = || -> Result<Tensor> {
                if stock {
                    let y = x.conv2d(&w, 0, 1, 1, 1)?;
                    let y = y.broadcast_add(&b.reshape((1, g.o, 1, 1))?)?.relu()?;
                    if pool { max_pool2x2_stock(&y) } else { Ok(y) }
                } else if !pool {
                    conv2d_bias_relu(&x, &w, &b, true, true)
                } else if fused {
                    conv2d_bias_relu_pool2x2(&x, &w, &b, i > 0)
                } else {
                    max_pool2x2(&conv2d_bias_relu(&x, &w, &b, true, i > 0)?)
                }
            };
            let fwd = time_min(reps, || {
                forward().unwrap();
            });
            let y = forward()?;
            let loss = (y * &probe)?.sum_all()?;
            let bwd = time_min(reps, || {
                loss.backward().unwrap();
            });
            let bflops = g.flops() * if i > 0 { 2.0 } else { 1.0 };
            eprintln!(
                "{label} conv{}{}, {n} images: fwd {:8.1} ms {:6.1} GFLOP/s | bwd {:8.1} ms {:6.1} GFLOP/s",
                i + 1,
                if pool { "+pool" } else { "" },
                fwd * 1e3,
                g.flops() / fwd / 1e9,
                bwd * 1e3,
                bflops / bwd / 1e9
            );
            total = (total.0 + fwd, total.1 + bwd, total.2 + g.flops() + bflops);
        }
        eprintln!(
            "{label} total, {n} images: fwd {:.0} ms, bwd {:.0} ms, {:.1} GFLOP/s; {:.0} ms per 64 images",
            total.0 * 1e3,
            total.1 * 1e3,
            total.2 / (total.0 + total.1) / 1e9,
            (total.0 + total.1) * 64.0 / n as f64 * 1e3
        );
    }
    Ok(())
}
