#!/usr/bin/python3
"""Independent reference for the Fréchet distance tests (Debian's python3-numpy / python3-scipy).

Reads JSON on stdin: {"a": [[...], ...], "b": [[...], ...]} (rows are feature vectors) and writes
JSON: numpy mean/cov (ddof=1, as pytorch-fid) and the distance two ways:
  - "sqrtm": pytorch-fid's recipe, scipy.linalg.sqrtm(sigma1 @ sigma2), real part;
  - "eigh":  the symmetric form Tr((S1^1/2 S2 S1^1/2)^1/2) with scipy.linalg.eigh (for rank-deficient
             covariances, where sqrtm of the non-symmetric product is ill-conditioned).
"""
import json, sys
import numpy as np
from scipy import linalg


def stats(x):
    x = np.asarray(x, dtype=np.float64)
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def fid_sqrtm(mu1, s1, mu2, s2):
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    if not np.isfinite(covmean).all():
        off = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + off).dot(s2 + off))
    covmean = np.real(covmean)
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def psd_sqrt(s):
    w, v = linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def fid_eigh(mu1, s1, mu2, s2):
    diff = mu1 - mu2
    r = psd_sqrt(s1)
    w = linalg.eigvalsh(r @ s2 @ r)
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(w, 0, None)).sum())


req = json.load(sys.stdin)
mu1, s1 = stats(req["a"])
mu2, s2 = stats(req["b"])
json.dump({
    "mu_a": mu1.tolist(), "sigma_a": s1.tolist(),
    "sqrtm": fid_sqrtm(mu1, s1, mu2, s2),
    "eigh": fid_eigh(mu1, s1, mu2, s2),
    "self_sqrtm": fid_sqrtm(mu1, s1, mu1, s1),
}, sys.stdout)
