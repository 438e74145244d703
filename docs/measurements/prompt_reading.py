"""What a toy model draws for a handful of prompts after one fine-tune on a tuning subject, with
and without guidance: whether the fine-tune taught the subject to its prompt or to every prompt.

    python docs/measurements/prompt_reading.py --model toy-flux --finetuner full --steps 100 --lr 2.25e-4
    python docs/measurements/prompt_reading.py --model toy-flux --finetuner none      # the unedited model

Only the tuning subject (the yellow square) and tuning seed (100) of `bench toy-finetunes` are
used, never the study's subject or seeds. Reported in docs/toy-world.md ("Unseen token rows").
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

from editpersist.finetuners.config import FinetuneConfig
from editpersist.finetuners.core import finetune
from editpersist.finetuners.subjects import ToySubject
from editpersist.io import atomic_path
from editpersist.sampling import SamplingConfig, generate_counts, stream_seed
from editpersist.states import load_model_state
from editpersist.toy.reader import AttributeReader

PROMPTS = ("a sks square", "a square", "a blue circle", "a circle", "a green triangle", "a red square", "a blue square")
SEED = 100
FAMILY = {"toy-sd": "sd", "toy-flux": "flux"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="toy-flux", choices=sorted(FAMILY))
    p.add_argument("--path", help="model directory (default: resources/toy/models/<model>)")
    p.add_argument("--finetuner", default="full", choices=["none", "lora", "dora", "full"])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=2.25e-4)
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--guidance", type=float, nargs="+", default=[5.0, 1.0])
    p.add_argument("--out", help="JSON to write (default: results/prompt_reading_<model>_<finetuner>_<steps>_<lr>.json)")
    args = p.parse_args()
    family, pipe = load_model_state(Path(args.path or f"resources/toy/models/{args.model}"), FAMILY[args.model], [], "cpu")
    subject = ToySubject("tune-yellow-square", "square", "yellow")
    if args.finetuner != "none":
        adapter = {"rank": 4, "alpha": 4} if args.finetuner in ("lora", "dora") else {}
        cfg = FinetuneConfig(args.finetuner, seed=SEED, steps=args.steps, lr=args.lr, batch=8, precision="fp32", **adapter)
        finetune(pipe, family, subject.images(16, SEED, 32), cfg)
    reader = AttributeReader.load(Path("resources/toy/reader"))
    drawn = {}
    for guidance in args.guidance:
        images, meta = generate_counts(pipe, family, {q: args.images for q in PROMPTS},
                                       SamplingConfig(steps=10, guidance=guidance),
                                       base_seed=stream_seed(SEED, "finetune_fit"))
        reads = reader.read(images)
        for prompt in PROMPTS:
            counts = collections.Counter(f"{r['color']} {r['shape']}" for r, (q, _, _) in zip(reads, meta) if q == prompt)
            drawn[f"guidance {guidance:g}: {prompt}"] = dict(counts.most_common())
            print(f"guidance {guidance:g}, {prompt!r}: {dict(counts.most_common(4))}")
    out = Path(args.out or f"results/prompt_reading_{args.model}_{args.finetuner}_{args.steps}_{args.lr:g}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps({"args": vars(args), "drawn": drawn}, indent=2) + "\n")


if __name__ == "__main__":
    main()
