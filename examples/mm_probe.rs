use candle_core::{Device, Tensor};
use std::time::Instant;
fn main() {
    let dev = Device::Cpu;
    let shapes = [
        (334usize, 512usize, 1536usize),
        (334, 1536, 512),
        (334, 512, 512),
        (1024, 256, 768),
        (1024, 256, 512),
        (1024, 512, 256),
        (256, 1024, 1024),
        (1, 512, 1536),
        (1, 1536, 512),
    ];
    dev.with_context(|| {
        for (m, k, n) in shapes {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let wt = w.t().unwrap().contiguous().unwrap();
            let mut res = vec![];
            for which in 0..2 {
                let f = || {
                    if which == 0 {
                        x.matmul(&w.t().unwrap()).unwrap()
                    } else {
                        x.matmul(&wt).unwrap()
                    }
                };
                for _ in 0..5 {
                    f();
                }
                let r = 50;
                let t = Instant::now();
                for _ in 0..r {
                    f();
                }
                let dt = t.elapsed().as_secs_f64() / r as f64;
                res.push(format!(
                    "{:.3} ms {:.0} GF",
                    dt * 1e3,
                    2.0 * (m * k * n) as f64 / dt / 1e9
                ));
            }
            println!("{m}x{k}x{n}: w.t() {} | (in,out) {}", res[0], res[1]);
        }
    });
}
