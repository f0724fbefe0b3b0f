#!/usr/bin/env python
"""Is the undefended model's robust accuracy under APGD-CE a property of the loss? APGD with the
cross-entropy loss, with the DLR loss, and APGD-T (targeted DLR, top-9 classes), Linf, on the first
``--num`` correctly classified CIFAR-10 test images (the images of ``scripts/robustness.py``), plus
the logit margins and whether the true class's float32 softmax saturates at 1.

    python scripts/undefended_losses.py                    # 500 images, 8/255, 100 steps (about 6 minutes on 2 cores)
    python scripts/undefended_losses.py --num 50 --steps 10   # a quick look

One JSON line a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vgg19_cifar")
    p.add_argument("--data", default=os.environ.get("HBJAX_DATA", "../shared/data") + "/cifar10")
    p.add_argument("--num", type=int, default=500)
    p.add_argument("--eps", type=float, default=8.0, help="Linf radius in 1/255")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.num < 1 or args.steps < 1 or args.eps <= 0:
        p.error("--num and --steps must be at least 1 and --eps positive")

    import jax
    import jax.numpy as jnp
    import numpy as np

    import hbjax
    import hbjax.data
    from hbjax import attacks

    model = hbjax.models.load(args.model)
    x, y = hbjax.data.correctly_classified(model, args.data, args.num)
    x, y = jnp.asarray(x), jnp.asarray(y)

    def logits_fn(v):
        return model.apply(model.params, v)

    logits = np.asarray(logits_fn(x))
    top2 = np.sort(logits, axis=-1)[:, -2:]
    p_true = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1))[np.arange(len(y)), np.asarray(y)]
    print(json.dumps({"images": int(len(y)), "logit_margin_median": float(np.median(top2[:, 1] - top2[:, 0])),
                      "softmax_true_saturated": float(np.mean(p_true == 1.0))}), flush=True)  # fmt: skip
    key = jax.random.key(args.seed)
    eps = args.eps / 255.0
    runs = [("apgd_ce", attacks.apgd, {"loss": "ce"}), ("apgd_dlr", attacks.apgd, {"loss": "dlr"}),
            ("apgd_t", attacks.apgd_t, {})]  # fmt: skip
    for name, attack, options in runs:
        start = time.perf_counter()
        result = attack(logits_fn, x, y, key, eps=eps, norm="linf", steps=args.steps, **options)
        correct = np.asarray(jnp.argmax(logits_fn(result.x_adv), axis=-1)) == np.asarray(y)
        print(json.dumps({"attack": name, "eps": eps, "steps": args.steps, "robust_accuracy": float(correct.mean()),
                          "max_linf": float(jnp.max(jnp.abs(result.x_adv - x))),
                          "seconds": round(time.perf_counter() - start, 1)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
