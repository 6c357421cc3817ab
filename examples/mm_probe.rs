use candle_core::{Device, Tensor};
use rayon::prelude::*;
use std::time::Instant;

#[target_feature(enable = "avx512f")]
unsafe fn axpy_rows(x: &[f32], w: &[f32], n: usize, c0: usize, out: &mut [f32]) {
    let cw = out.len();
    for v in out.iter_mut() {
        *v = 0.0;
    }
    for (k, &xk) in x.iter().enumerate() {
        let row = &w[k * n + c0..k * n + c0 + cw];
        for (o, &r) in out.iter_mut().zip(row) {
            *o += xk * r;
        }
    }
}

fn gemv(x: &[f32], w: &[f32], k: usize, n: usize, chunk: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    out.par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(i, o)| unsafe { axpy_rows(x, w, n, i * chunk, o) });
    let _ = k;
    out
}

fn main() {
    let dev = Device::Cpu;
    let shapes = [
        (1usize, 512usize, 1024usize),
        (1, 512, 3072),
        (1, 1536, 512),
        (1, 512, 512),
    ];
    dev.with_context(|| {
        for (m, k, n) in shapes {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1.0, (k, n), &dev).unwrap();
            let xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let wv = wt.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let mut res = vec![];
            for which in 0..4 {
                let f = || match which {
                    0 => {
                        x.matmul(&wt).unwrap();
                    }
                    1 => {
                        gemv(&xv, &wv, k, n, 128);
                    }
                    2 => {
                        gemv(&xv, &wv, k, n, 256);
                    }
                    _ => {
                        gemv(&xv, &wv, k, n, n.div_ceil(2));
                    }
                };
                for _ in 0..20 {
                    f();
                }
                let r = 200;
                let t = Instant::now();
                for _ in 0..r {
                    f();
                }
                let dt = t.elapsed().as_secs_f64() / r as f64;
                res.push(format!("{:.3} ms", dt * 1e3));
            }
            println!(
                "{m}x{k}x{n}: candle {} | gemv128 {} | gemv256 {} | half {}",
                res[0], res[1], res[2], res[3]
            );
        }
    });
}
