"""The recipes' data packages: pinned npm packages installed once into models/.cache/npm (git-ignored)."""
import json, os, subprocess

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def npm_dir():
    return os.path.join(ROOT, "models", ".cache", "npm")


def ensure_packages(packages):
    """Install `packages` ({name: version}) unless those exact versions are there; returns node_modules."""
    nm = os.path.join(npm_dir(), "node_modules")
    ok = all(os.path.exists(os.path.join(nm, p, "package.json")) and
             json.load(open(os.path.join(nm, p, "package.json")))["version"] == v
             for p, v in packages.items())
    if ok:
        return nm
    os.makedirs(npm_dir(), exist_ok=True)
    pj = os.path.join(npm_dir(), "package.json")
    if not os.path.exists(pj):
        json.dump({"name": "emoji-cache", "private": True}, open(pj, "w"))
    cmd = ["npm", "install", "--prefix", npm_dir(), "--no-save", "--ignore-scripts", "--no-audit",
           "--no-fund"] + [f"{p}@{v}" for p, v in packages.items()]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return nm
