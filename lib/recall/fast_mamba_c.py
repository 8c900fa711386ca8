"""The selective scan of :mod:`fast_mamba` as a small C kernel (compiled once with the system's
C compiler, loaded with ctypes; no PyTorch headers), for when every millisecond counts.

Same function, same parameters: ``CMambaBlock`` is :class:`fast_mamba.FastMambaBlock` with
its ``scan`` replaced. The kernel walks one sequence at a time with the state h (N, E) in
cache; the backward pass recomputes that sequence's states (L, N, E) instead of storing
them, so nothing of size (B, L, N, E) is ever allocated. Single-threaded, float32, CPU.
If no compiler is found, :func:`available` is False and callers fall back to PyTorch.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from .fast_mamba import LOG2E, FastMambaBlock, selective_scan

_SOURCE = r"""
#include <stdint.h>
#include <string.h>

/* 2^x for x <= 0 (clamped at -126): 2^round(x) from the exponent bits times a degree-7
   Taylor polynomial of 2^f, |f| <= 1/2 (relative error ~1e-8); vectorises. */
static inline float exp2_(float x) {
    x = x < -126.0f ? -126.0f : (x > 0.0f ? 0.0f : x);
    float k = __builtin_rintf(x), f = (x - k) * 0.6931471805599453f, p;
    p = 1.0f + f * (1.0f + f * (0.5f + f * (1.0f / 6 + f * (1.0f / 24 + f * (1.0f / 120
        + f * (1.0f / 720 + f * (1.0f / 5040)))))));
    int32_t bits = ((int32_t)k + 127) << 23;
    float s;
    memcpy(&s, &bits, 4);
    return p * s;
}

/* y[b,t,e] = sum_n C[b,t,n] h_t[n,e],  h_t = 2^(delta[b,t,e] A2[n,e]) h_{t-1} + Bm[b,t,n] u[b,t,e].
   delta, u, y (B,L,E); Bm, C (B,L,N); A2 = A^T log2(e) (N,E); h: scratch (N,E). */
void scan_forward(int B, int L, int E, int N, const float *delta, const float *A2, const float *u,
                  const float *Bm, const float *C, float *y, float *h) {
    for (int b = 0; b < B; b++) {
        memset(h, 0, sizeof(float) * N * E);
        for (int t = 0; t < L; t++) {
            const long o = ((long)b * L + t);
            const float *d = delta + o * E, *ut = u + o * E, *bt = Bm + o * N, *ct = C + o * N;
            float *yt = y + o * E;
            memset(yt, 0, sizeof(float) * E);
            for (int n = 0; n < N; n++) {
                float *hn = h + n * E;
                const float *an = A2 + n * E, bn = bt[n], cn = ct[n];
                #pragma GCC ivdep  /* the arrays do not overlap */
                for (int e = 0; e < E; e++) {
                    float hv = exp2_(d[e] * an[e]) * hn[e] + bn * ut[e];
                    hn[e] = hv;
                    yt[e] += cn * hv;
                }
            }
        }
    }
}

/* Gradients of sum(dy * y). g_t = dLoss/dh_t = C_t dy_t + dA_{t+1} g_{t+1};  P_t = g_t h_{t-1} dA_t.
   ddelta_t = sum_n A P_t, dA += sum_{b,t} delta_t P_t (dA (N,E) accumulates), du_t = sum_n B_t g_t,
   dB_t = sum_e u_t g_t, dC_t = sum_e h_t dy_t. A = A^T (N,E); work: zeros, (2 L + 3) N E. */
void scan_backward(int B, int L, int E, int N, const float *delta, const float *A2, const float *A,
                   const float *u, const float *Bm, const float *C, const float *dy, float *ddelta,
                   float *dA, float *du, float *dB, float *dC, float *work) {
    const long S = (long)N * E;  /* work = [0 | H_0 .. H_{L-1} | DA_0 .. DA_{L-1} | 0 | g], zeros kept */
    float *H = work + S, *DA = work + (L + 1) * S, *g = work + (2 * L + 2) * S;
    for (int b = 0; b < B; b++) {
        const long o = (long)b * L;
        for (int t = 0; t < L; t++) {  /* recompute this sequence's states */
            const float *d = delta + (o + t) * E, *ut = u + (o + t) * E, *bt = Bm + (o + t) * N;
            for (int n = 0; n < N; n++) {
                const float *an = A2 + n * E, *hp = H + (t - 1) * S + n * E;
                float *hn = H + t * S + n * E, *dan = DA + t * S + n * E, bn = bt[n];
                #pragma GCC ivdep  /* the arrays do not overlap */
                for (int e = 0; e < E; e++) {
                    float a = exp2_(d[e] * an[e]);
                    dan[e] = a;
                    hn[e] = a * hp[e] + bn * ut[e];  /* H_{-1} = 0 */
                }
            }
        }
        memset(g, 0, sizeof(float) * S);
        for (int t = L - 1; t >= 0; t--) {
            const float *d = delta + (o + t) * E, *ut = u + (o + t) * E, *dyt = dy + (o + t) * E;
            const float *bt = Bm + (o + t) * N, *ct = C + (o + t) * N;
            float *ddt = ddelta + (o + t) * E, *dut = du + (o + t) * E;
            float *dbt = dB + (o + t) * N, *dct = dC + (o + t) * N;
            memset(ddt, 0, sizeof(float) * E);
            memset(dut, 0, sizeof(float) * E);
            for (int n = 0; n < N; n++) {
                float *gn = g + n * E, *dAn = dA + n * E, bn = bt[n], cn = ct[n], sb = 0.0f, sc = 0.0f;
                const float *an = A + n * E, *hn = H + t * S + n * E, *hp = H + (t - 1) * S + n * E;
                const float *dan = DA + t * S + n * E, *dnext = DA + (t + 1) * S + n * E;
                #pragma GCC ivdep  /* the arrays do not overlap */
                for (int e = 0; e < E; e++) {
                    float gv = dnext[e] * gn[e] + cn * dyt[e];  /* DA_L = 0 */
                    gn[e] = gv;
                    sc += hn[e] * dyt[e];
                    sb += gv * ut[e];
                    dut[e] += bn * gv;
                    float p = gv * hp[e] * dan[e];  /* H_{-1} = 0 */
                    ddt[e] += an[e] * p;
                    dAn[e] += d[e] * p;
                }
                dbt[n] = sb;
                dct[n] = sc;
            }
        }
    }
}
"""

_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fassociative-math",
          "-fno-signed-zeros", "-shared", "-fPIC"]  # associative math: vectorised sums over E


def _cpu_id() -> str:
    """The CPU's feature flags (Linux), so that a cache shared by two machines keeps one build per CPU."""
    try:
        return next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return platform.processor()


def _compile() -> ctypes.CDLL | None:
    """Build (once per source, flags, compiler and CPU; cached under ~/.cache/fast_mamba) and load the kernel."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    key = hashlib.sha256("\n".join([_SOURCE, *_FLAGS, cc, _cpu_id()]).encode()).hexdigest()[:16]
    lib = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fast_mamba" / f"scan_{key}.so"
    if not lib.exists():
        lib.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            src, out = Path(tmp) / "scan.c", Path(tmp) / "scan.so"
            src.write_text(_SOURCE)
            if subprocess.run([cc, *_FLAGS, str(src), "-o", str(out)], capture_output=True).returncode:
                return None
            os.replace(out, lib)  # atomic: concurrent builders are harmless
    so = ctypes.CDLL(str(lib))
    for fn, n_pointers in ((so.scan_forward, 7), (so.scan_backward, 13)):
        fn.argtypes, fn.restype = [ctypes.c_int] * 4 + [ctypes.c_void_p] * n_pointers, None
    return so


_LIB = _compile()


def available() -> bool:
    """True when the C kernel compiled and loaded."""
    return _LIB is not None


def _call(fn: ctypes._CFuncPtr, sizes: tuple[int, ...], *tensors: Tensor) -> None:
    """fn(*sizes, *pointers); the caller holds every tensor, so none is freed during the call."""
    assert all(t.is_contiguous() and t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)
    fn(*sizes, *(t.data_ptr() for t in tensors))


def _forward(delta: Tensor, A: Tensor, u: Tensor, Bm: Tensor, C: Tensor) -> Tensor:
    """y (B, L, E) from contiguous delta, u (B, L, E), Bm, C (B, L, N) and A (E, N)."""
    (b, L, e), n = u.shape, A.shape[1]
    A2, y, h = (A.t() * LOG2E).contiguous(), torch.empty_like(u), torch.empty(n, e)  # h: scratch
    _call(_LIB.scan_forward, (b, L, e, n), delta, A2, u, Bm, C, y, h)
    return y


class CSelectiveScan(torch.autograd.Function):
    """Same contract as :class:`fast_mamba.SelectiveScan`: delta, u (B, L, E); A (E, N);
    Bm, C (B, L, N) -> y (B, L, E); float32 CPU tensors. Saves only the inputs."""

    @staticmethod
    def forward(ctx, delta: Tensor, A: Tensor, u: Tensor, Bm: Tensor, C: Tensor) -> Tensor:
        delta, u, Bm, C = (t.contiguous() for t in (delta, u, Bm, C))
        ctx.save_for_backward(delta, A, u, Bm, C)
        return _forward(delta, A, u, Bm, C)

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        delta, A, u, Bm, C = ctx.saved_tensors
        (b, L, e), n = u.shape, A.shape[1]
        At = A.t().contiguous()  # (N, E)
        A2, dy = At * LOG2E, dy.contiguous()
        ddelta, dAt, du, dB, dC = (torch.empty_like(delta), torch.zeros(n, e), torch.empty_like(u),
                                   torch.empty_like(Bm), torch.empty_like(C))
        work = torch.zeros((2 * L + 3) * n * e)  # the recomputed states of one sequence
        _call(_LIB.scan_backward, (b, L, e, n), delta, A2, At, u, Bm, C, dy, ddelta, dAt, du, dB, dC, work)
        return ddelta, dAt.t(), du, dB, dC


def c_selective_scan(delta: Tensor, A: Tensor, u: Tensor, Bm: Tensor, C: Tensor) -> Tensor:
    """The C kernel for float32 CPU tensors (the forward alone under no_grad), else
    :func:`fast_mamba.selective_scan`."""
    tensors = (delta, A, u, Bm, C)
    if _LIB is None or any(t.dtype != torch.float32 or t.device.type != "cpu" for t in tensors):
        return selective_scan(*tensors)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return CSelectiveScan.apply(*tensors)
    return _forward(delta.contiguous(), A, u.contiguous(), Bm.contiguous(), C.contiguous())


class CMambaBlock(FastMambaBlock):
    """:class:`fast_mamba.FastMambaBlock` (so mambapy's parameters) whose selective scan is the C kernel."""

    scan = staticmethod(c_selective_scan)
