#!/usr/bin/env python
"""The numbers of a card's ``sample_check``: accuracy (correct rows) and FLOPs ratio at the model's own rule on the
committed test sample that ``sample_check.data`` (training-config fields) describes, for a model folder or a halting
adapter folder. Prints the filled ``sample_check`` as YAML, to paste into the variant's card.yaml.

    python scripts/adapter_sample_check.py --card hub_configs/<variant>/card.yaml --model-dir out/<run>/model
    python scripts/adapter_sample_check.py --card hub_configs/<variant>/card.yaml --adapter pact_zoo/adapters/<name> \\
        --backbone data/<backbone>
"""
import argparse
import sys

import yaml

from pact_zoo.cli import ArgumentParser, run_command


def main(argv=None) -> int:
    parser = ArgumentParser(prog="adapter_sample_check.py", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--card", required=True, help="the variant's card.yaml, with sample_check.data")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", help="a trained model folder")
    source.add_argument("--adapter", help="a halting adapter folder")
    parser.add_argument("--backbone", help="with --adapter: the backbone's local folder or file")
    args = parser.parse_args(argv)

    import pact_zoo
    from pact_zoo.hub import _load_card
    from pact_zoo.training.evaluate import evaluate_sample
    from pact_zoo.training.io import load_model_folder

    check = _load_card(args.card).get("sample_check")
    if not isinstance(check, dict) or not isinstance(check.get("data"), dict):
        raise ValueError(f"--card {args.card} has no sample_check.data (the training-config fields of the sample)")
    model = load_model_folder(args.model_dir) if args.model_dir else pact_zoo.load_adapter(args.adapter, args.backbone)
    result = evaluate_sample(model, check["data"])
    stages = [stage for _, stage in pact_zoo.adaptive_stages(model) if stage.adaptive]
    check.update(rows=result["num_samples"], correct=result["correct"], flops_ratio=round(result["flops_ratio"], 6),
                 threshold=stages[0].method.threshold, mean_units=[round(u, 4) for u in result["mean_units"]],
                 depth_std=[round(s, 4) for s in result["depth_spread"]["std"]])
    print(yaml.safe_dump({"sample_check": check}, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
