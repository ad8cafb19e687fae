#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Core tests against a reference written from the spec with plain tch ops:
//! per-frame attention over `[G ; frame]` and global attention over everything
//! (and the ablation modes: per-frame self-attention of `[G ; frame]` with G's
//! results averaged, and one attention over everything), with the gradients of
//! that reference from libtorch autograd.

use super::*;
use tch::{Device, Kind};

struct Case {
    b: i64,
    g: i64,
    t: i64,
    l: i64,
    h: i64,
    hd: i64,
}

fn no_bias<'a>(w_in: &'a Tensor, w_out: &'a Tensor) -> Weights<'a> {
    Weights { in_proj_weight: w_in, in_proj_bias: None, out_proj_weight: w_out, out_proj_bias: None }
}

fn attend(q: &Tensor, k: &Tensor, v: &Tensor, h: i64) -> Tensor {
    // q (n, m, D), k/v (n, s, D) -> (n, m, D)
    let (n, m, dim) = q.size3().unwrap();
    let s = k.size()[1];
    let hd = dim / h;
    let split = |t: &Tensor, len| t.reshape([n, len, h, hd]).transpose(1, 2);
    let scores = split(q, m).matmul(&split(k, s).transpose(-2, -1)) / (hd as f64).sqrt();
    scores
        .softmax(-1, q.kind())
        .matmul(&split(v, s))
        .transpose(1, 2)
        .reshape([n, m, dim])
}

fn reference(
    x: &Tensor,
    w_in: &Tensor,
    b_in: &Tensor,
    w_out: &Tensor,
    b_out: &Tensor,
    c: &Case,
    mode: Mode,
) -> Tensor {
    let dim = c.h * c.hd;
    let qkv = x.linear(w_in, Some(b_in));
    let parts = qkv.split(dim, -1);
    let (q, k, v) = (&parts[0], &parts[1], &parts[2]);
    let frame = |t: &Tensor, f: i64| t.narrow(1, c.g + f * c.l, c.l);
    let with_g = |t: &Tensor, f: i64| Tensor::cat(&[t.narrow(1, 0, c.g), frame(t, f)], 1);
    let mut outs = Vec::new();
    match mode {
        Mode::GlobalLocal => {
            if c.g > 0 {
                outs.push(attend(&q.narrow(1, 0, c.g), k, v, c.h));
            }
            for f in 0..c.t {
                outs.push(attend(&frame(q, f), &with_g(k, f), &with_g(v, f), c.h));
            }
        }
        Mode::Local => {
            let mut g_parts = Vec::new();
            for f in 0..c.t {
                let o = attend(&with_g(q, f), &with_g(k, f), &with_g(v, f), c.h);
                g_parts.push(o.narrow(1, 0, c.g));
                outs.push(o.narrow(1, c.g, c.l));
            }
            outs.insert(
                0,
                Tensor::stack(&g_parts, 0).mean_dim([0i64].as_slice(), false, x.kind()),
            );
        }
        Mode::Global => outs.push(attend(q, k, v, c.h)),
    }
    Tensor::cat(&outs, 1).linear(w_out, Some(b_out))
}

fn run_case(c: &Case, mode: Mode, backend: Backend) {
    tch::manual_seed(0);
    let opts = (Kind::Double, Device::Cpu);
    let dim = c.h * c.hd;
    let s = c.g + c.t * c.l;
    let x = Tensor::randn([c.b, s, dim], opts).set_requires_grad(true);
    let w_in = (Tensor::randn([3 * dim, dim], opts) / (dim as f64).sqrt()).set_requires_grad(true);
    let b_in = (Tensor::randn([3 * dim], opts) * 0.1).set_requires_grad(true);
    let w_out = (Tensor::randn([dim, dim], opts) / (dim as f64).sqrt()).set_requires_grad(true);
    let b_out = (Tensor::randn([dim], opts) * 0.1).set_requires_grad(true);
    let expected = reference(&x, &w_in, &b_in, &w_out, &b_out, c, mode);
    let grad_out = Tensor::randn([c.b, s, dim], opts);
    let ref_grads = Tensor::run_backward(
        &[(&expected * &grad_out).sum(Kind::Double)],
        &[&x, &w_in, &b_in, &w_out, &b_out],
        false,
        false,
    );
    let _guard = tch::no_grad_guard();
    let w = Weights { in_proj_weight: &w_in, in_proj_bias: Some(&b_in), out_proj_weight: &w_out, out_proj_bias: Some(&b_out) };
    let cfg = AttentionConfig::new(c.h, c.g, c.t).with_mode(mode).with_backend(backend);
    let fwd = attention_forward(&x, w, cfg).unwrap();
    assert!(
        fwd.out.allclose(&expected, 1e-10, 1e-10, false),
        "{mode:?}: forward differs"
    );
    let needs = NeedsGrad {
        x: true,
        in_proj_weight: true,
        in_proj_bias: true,
        out_proj_weight: true,
        out_proj_bias: true,
    };
    // Both ways of getting q/k/v: the saved projection, and recomputed from x.
    // out_proj_bias is not read by the backward.
    let w = Weights { out_proj_bias: None, ..w };
    let from_qkv = attention_backward(&grad_out, Some(&x), Some(&fwd.qkv), w, cfg, needs).unwrap();
    let grads = attention_backward(&grad_out, Some(&x), None, w, cfg, needs).unwrap();
    let a = from_qkv.x.unwrap();
    assert!(
        a.allclose(grads.x.as_ref().unwrap(), 1e-12, 1e-12, false),
        "saved vs recomputed qkv differ"
    );
    let got = [
        grads.x,
        grads.in_proj_weight,
        grads.in_proj_bias,
        grads.out_proj_weight,
        grads.out_proj_bias,
    ];
    for (i, (g, r)) in got.iter().zip(ref_grads.iter()).enumerate() {
        let g = g.as_ref().expect("gradient asked for");
        let err = (g - r).abs().max().double_value(&[]);
        assert!(
            g.allclose(r, 1e-9, 1e-10, false),
            "{mode:?}: gradient {i} differs by {err}"
        );
    }
}

#[test]
fn matches_reference_flash_and_math() {
    for (backend, mode) in [Backend::Flash, Backend::Math]
        .into_iter()
        .flat_map(|b| [Mode::GlobalLocal, Mode::Local, Mode::Global].map(|m| (b, m)))
    {
        for c in [
            Case {
                b: 2,
                g: 4,
                t: 3,
                l: 5,
                h: 2,
                hd: 4,
            },
            Case {
                b: 1,
                g: 0,
                t: 1,
                l: 7,
                h: 1,
                hd: 8,
            },
            Case {
                b: 1,
                g: 1,
                t: 12,
                l: 1,
                h: 4,
                hd: 2,
            },
            Case {
                b: 3,
                g: 0,
                t: 3,
                l: 5,
                h: 3,
                hd: 4,
            },
        ] {
            run_case(&c, mode, backend);
        }
    }
}

#[test]
fn weight_gradients_only_when_asked() {
    let opts = (Kind::Float, Device::Cpu);
    let x = Tensor::randn([1, 2 + 2 * 3, 8], opts);
    let w_in = Tensor::randn([24, 8], opts);
    let w_out = Tensor::randn([8, 8], opts);
    let w = no_bias(&w_in, &w_out);
    let cfg = AttentionConfig::new(2, 2, 2);
    let fwd = attention_forward(&x, w, cfg).unwrap();
    let needs = NeedsGrad {
        x: true,
        ..Default::default()
    };
    let g = attention_backward(&fwd.out, None, Some(&fwd.qkv), w, cfg, needs).unwrap();
    assert!(g.x.is_some());
    assert!(
        g.in_proj_weight.is_none()
            && g.in_proj_bias.is_none()
            && g.out_proj_weight.is_none()
            && g.out_proj_bias.is_none()
    );
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let opts = (Kind::Float, Device::Cpu);
    let w_in = Tensor::randn([24, 8], opts);
    let w_out = Tensor::randn([8, 8], opts);
    let cases: Vec<(Tensor, i64, i64, i64, &str)> = vec![
        (Tensor::randn([10, 8], opts), 2, 2, 2, "`x` must have shape"),
        (
            Tensor::randn([1, 9, 8], opts),
            2,
            2,
            2,
            "num_global + num_frames * tokens",
        ),
        (
            Tensor::randn([1, 10, 8], opts),
            3,
            2,
            2,
            "multiple of num_heads",
        ),
        (
            Tensor::randn([0, 10, 8], opts),
            2,
            2,
            2,
            "at least one video",
        ),
        (
            Tensor::randn([1, 10, 8], (Kind::Double, Device::Cpu)),
            2,
            2,
            2,
            "`in_proj_weight` must have dtype float64",
        ),
        (Tensor::randn([1, 10, 8], opts), 2, 2, 0, "num_frames"),
    ];
    for (x, h, g, t, msg) in cases {
        let cfg = AttentionConfig::new(h, g, t).with_mode(Mode::Local);
        let err = attention_forward(&x, no_bias(&w_in, &w_out), cfg).err().expect("an error");
        assert!(err.to_string().contains(msg), "{err} should contain {msg}");
    }
    let x = Tensor::randn([1, 10, 8], opts);
    let bad_w = Tensor::randn([8, 24], opts);
    let cfg = AttentionConfig::new(2, 2, 2).with_mode(Mode::Global);
    let err = attention_forward(&x, no_bias(&bad_w, &w_out), cfg).err().expect("an error");
    assert!(
        err.to_string()
            .contains("`in_proj_weight` must have shape [24, 8]"),
        "{err}"
    );
    let needs = NeedsGrad {
        in_proj_weight: true,
        ..Default::default()
    };
    let qkv = Tensor::randn([1, 10, 24], opts);
    let cfg = AttentionConfig::new(2, 2, 2);
    let err = attention_backward(&x, None, Some(&qkv), no_bias(&w_in, &w_out), cfg, needs).err().expect("an error");
    assert!(err.to_string().contains("needs the input `x`"), "{err}");
}

#[test]
fn weight_gradients_only_when_asked_in_every_mode() {
    let opts = (Kind::Float, Device::Cpu);
    let x = Tensor::randn([1, 2 + 2 * 3, 8], opts);
    let (w_in, w_out) = (Tensor::randn([24, 8], opts), Tensor::randn([8, 8], opts));
    for mode in [Mode::Local, Mode::Global] {
        let (w, cfg) = (no_bias(&w_in, &w_out), AttentionConfig::new(2, 2, 2).with_mode(mode));
        let fwd = attention_forward(&x, w, cfg).unwrap();
        let needs = NeedsGrad {
            x: true,
            ..Default::default()
        };
        let g = attention_backward(&fwd.out, None, Some(&fwd.qkv), w, cfg, needs).unwrap();
        assert!(
            g.x.is_some() && g.in_proj_weight.is_none() && g.out_proj_weight.is_none(),
            "{mode:?}"
        );
    }
}

#[test]
fn mode_names() {
    for mode in [Mode::GlobalLocal, Mode::Local, Mode::Global] {
        assert_eq!(Mode::parse(mode.name()).unwrap(), mode);
    }
    assert_eq!(Mode::default(), Mode::GlobalLocal);
    let err = Mode::parse("joint").unwrap_err().to_string();
    assert!(
        err.contains("`mode`")
            && err.contains("'global_local', 'local', 'global'")
            && err.contains("joint"),
        "{err}"
    );
}

/// The global queries' weights, from their definition: per head, G's attention result is
/// `weights @ v`, rows sum to 1, and for `GlobalLocal`/`Global` they are the plain softmax
/// of G's scores over every key. Asking for them leaves the output unchanged.
#[test]
fn global_weights_match_reference_in_every_mode() {
    let c = Case { b: 2, g: 3, t: 4, l: 5, h: 2, hd: 4 };
    let opts = (Kind::Double, Device::Cpu);
    let (dim, s) = (c.h * c.hd, c.g + c.t * c.l);
    tch::manual_seed(1);
    let x = Tensor::randn([c.b, s, dim], opts);
    let w_in = Tensor::randn([3 * dim, dim], opts) / (dim as f64).sqrt();
    let b_in = Tensor::randn([3 * dim], opts) * 0.1;
    let eye = Tensor::eye(dim, opts);
    let heads = |t: &Tensor| t.reshape([c.b, -1, c.h, c.hd]).transpose(1, 2);
    let parts = x.linear(&w_in, Some(&b_in)).split(dim, -1);
    let (q, k, v) = (heads(&parts[0]), heads(&parts[1]), heads(&parts[2]));
    for mode in [Mode::GlobalLocal, Mode::Local, Mode::Global] {
        for backend in [Backend::Flash, Backend::Math] {
            let w = Weights { in_proj_bias: Some(&b_in), ..no_bias(&w_in, &eye) };
            let cfg = AttentionConfig::new(c.h, c.g, c.t).with_mode(mode).with_backend(backend);
            let plain = attention_forward(&x, w, cfg).unwrap();
            let fwd = attention_forward_with_weights(&x, w, cfg).unwrap();
            assert!(plain.weights.is_none());
            let w = fwd.weights.unwrap();
            assert_eq!(w.size(), vec![c.b, c.h, c.g, s], "{mode:?}");
            assert!(fwd.out.equal(&plain.out), "{mode:?}: output changed");
            let ones = Tensor::ones([c.b, c.h, c.g], opts);
            assert!(w.sum_dim_intlist([-1i64].as_slice(), false, Kind::Double).allclose(&ones, 1e-12, 1e-12, false));
            // weights @ v is G's attention result (out_proj is the identity here).
            let g_out = heads(&fwd.out.narrow(1, 0, c.g));
            assert!(w.matmul(&v).allclose(&g_out, 1e-10, 1e-10, false), "{mode:?}: weights @ v");
            if mode != Mode::Local {
                let scores = q.narrow(2, 0, c.g).matmul(&k.transpose(-2, -1)) / (c.hd as f64).sqrt();
                assert!(w.allclose(&scores.softmax(-1, Kind::Double), 1e-12, 1e-12, false), "{mode:?}");
            }
        }
    }
    // No global tokens: an empty (batch, heads, 0, seq).
    let x0 = x.narrow(1, c.g, c.t * c.l);
    let fwd = attention_forward_with_weights(&x0, no_bias(&w_in, &eye), AttentionConfig::new(c.h, 0, c.t)).unwrap();
    assert_eq!(fwd.weights.unwrap().size(), vec![c.b, c.h, 0, c.t * c.l]);
}

#[test]
fn config_defaults_to_dgl_on_the_fastest_kernel() {
    let cfg = AttentionConfig::new(4, 2, 3);
    assert_eq!((cfg.num_heads, cfg.num_global, cfg.num_frames), (4, 2, 3));
    assert_eq!((cfg.mode, cfg.backend), (Mode::GlobalLocal, Backend::Auto));
    let cfg = cfg.with_mode(Mode::Local).with_backend(Backend::Math);
    assert_eq!((cfg.mode, cfg.backend, cfg.num_heads), (Mode::Local, Backend::Math, 4));
}
