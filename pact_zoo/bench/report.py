"""The benchmark's output: the table rows printed while it runs, the report of a whole result, and the JSON file."""
from __future__ import annotations

from ..fileio import atomic_write_json

__all__ = ["EVAL_HEADER", "format_eval_row", "format_clock_row", "format_load", "format_training", "format_profile",
           "format_report", "clock_name", "write_json_atomic"]


def format_eval_row(record: dict) -> str:
    med = record["median_ms_per_sample"]
    eff = record.get("efficiency")
    target = record.get("efficiency_target")
    verdict = "" if target is None else ("met" if record.get("target_met") else "MISSED")
    plain = med.get("plain")
    return (f"{record['batch_size']:>6} {med.get('adaptive', float('nan')):>11.3f} "
            f"{med.get('full', float('nan')):>9.3f} {med.get('masked', float('nan')):>10.3f} "
            f"{record['flops_ratio']:>7.3f} {record.get('time_ratio_adaptive', float('nan')):>7.3f} "
            f"{eff if eff is not None else float('nan'):>7.3f} "
            f"{record.get('efficiency_masked', float('nan')):>7.3f} "
            f"{record.get('efficiency_adaptive_min', float('nan')):>7.3f} "
            f"{'' if target is None else f'<= {target:.2f}':>8} {verdict:<6}"
            + ("" if plain is None else f" plain {plain:.3f} ms/smp, eff vs plain "
                                        f"{record.get('efficiency_vs_plain', float('nan')):.3f}"))


def _load(values) -> str:
    return "n/a" if not values else f"{values[0]:.2f}"


def format_load(before, after) -> str:
    """The 1-minute load average before and after a timing (``os.getloadavg()`` tuples, empty if unknown)."""
    return f"{_load(before)} -> {_load(after)}"


def format_clock_row(timing: dict) -> str:
    """One timing of a batch size (a clock at a thread count): ms per sample, efficiency and the 1-minute load."""
    med = timing["median_ms_per_sample"]
    times = ", ".join(f"{mode} {ms:.3f}" for mode, ms in med.items())
    eff, vs_plain = timing.get("efficiency"), timing.get("efficiency_vs_plain")
    return (f"{timing['batch_size']:>6} {clock_name(timing['clock'])}, {timing['threads']} thread"
            f"{'' if timing['threads'] == 1 else 's'}: {times} ms/sample; efficiency "
            f"{'-' if eff is None else f'{eff:.3f}'}"
            + ("" if vs_plain is None else f" (vs plain {vs_plain:.3f})")
            + ("" if "efficiency_compiled_vs_compiled_plain" not in timing else
               f"; compiled vs compiled plain: efficiency {timing['efficiency_compiled_vs_compiled_plain']:.3f}")
            + f"; load {format_load(timing['load_average_before'], timing['load_average_after'])}")


EVAL_HEADER = (f"{'batch':>6} {'adaptive':>11} {'full':>9} {'masked':>10} {'FLOPs':>7} {'time':>7} "
               f"{'eff':>7} {'eff':>7} {'eff':>7} {'target':>8}\n"
               f"{'':>6} {'ms/sample':>11} {'ms/smp':>9} {'ms/smp':>10} {'ratio':>7} {'ratio':>7} "
               f"{'adapt':>7} {'masked':>7} {'(min)':>7}")


def format_training(tr: dict) -> list[str]:
    med, ratios = tr["median_s"], tr["ratios"]
    width = max([14] + [len(name) for name in med])  # registered method names may be longer than the defaults
    lines = [f"training step, batch {tr['batch_size']} (median of {len(next(iter(tr['times_s'].values())))}; "
             "units = fraction of the units the training forward ran)",
             f"{'network':>{width}} {'method':<36} {'units':>6} {'ms':>9} {'vs plain':>9} {'vs pact':>8}"]
    for name, seconds in med.items():
        units = tr["units_fraction"].get(name)
        vs_plain = 1.0 if name == "plain" else ratios.get(f"{name}_vs_plain")
        vs_pact = 1.0 if name == "pact" else ratios.get(f"{name}_vs_pact")
        lines.append(f"{name:>{width}} {tr['networks'][name]:<36} {'-' if units is None else f'{units:.3f}':>6} "
                     f"{1e3 * seconds:>9.1f} {'-' if vs_plain is None else f'{vs_plain:.3f}':>9} "
                     f"{'-' if vs_pact is None else f'{vs_pact:.3f}':>8}")
    if tr.get("ratio") is not None:
        lines.append(f"PACT step / plain step {tr['ratio']:.3f} (target <= {tr['target']}: "
                     f"{'met' if tr['target_met'] else 'MISSED'})")
    return lines


def format_profile(profile: dict) -> str:
    lines = [f"per-operator self CPU time of one eval forward, batch {profile['batch_size']} (torch.profiler)"]
    for mode, entry in profile["modes"].items():
        lines.append(f"{mode}: {entry['self_cpu_ms_total']:.2f} ms in all")
        lines += [f"  {op['name']:<36} {op['calls']:>6} calls {op['self_cpu_ms']:>9.3f} ms" for op in entry["ops"]]
    return "\n".join(lines)


def clock_name(clock: str) -> str:
    names = {"wall": "wall time", "process": "process CPU time", "both": "wall time (then process CPU time, 1 thread)"}
    return names.get(clock, clock)


def _format_memory(result: dict) -> list[str]:
    width = max([10] + [len(name) for name in result["memory"]])
    lines = ["", f"peak memory of one eval forward, batch {result['memory_batch_size']} (fresh process each)",
             f"{'network':>{width}} {'allocator MiB':>14} {'RSS delta MiB':>14} {'FLOPs ratio':>12}"]
    for name, mem in result["memory"].items():
        rss = mem.get("rss_peak_delta_bytes")
        ratio = mem.get("flops_ratio")
        lines.append(f"{name:>{width}} {mem['allocator_peak_bytes'] / 2**20:>14.2f} "
                     f"{'n/a' if rss is None else f'{rss / 2**20:.2f}':>14} "
                     f"{'-' if ratio is None else f'{ratio:.3f}':>12}")
    if "pact_below_act" in result:
        lines.append(f"PACT peak below ACT peak: {'met' if result['pact_below_act'] else 'MISSED'}")
    return lines


def format_report(result: dict) -> str:
    threshold = result.get("threshold")
    lines = [f"model {result['model']} {result['model_kwargs'] or ''} method {result['method']} threshold "
             f"{'-' if threshold is None else f'{threshold:.6g}'} input {'x'.join(map(str, result['input_shape']))}"
             f" on {result.get('device', 'cpu')} ({result['threads']} threads, {result['platform']['torch']})"]
    if result.get("calibration"):
        cal = result["calibration"]
        lines.append(f"calibration: target FLOPs ratio {cal['target_flops_ratio']}, achieved "
                     f"{cal['flops_ratio']:.4f} on {cal['num_samples']} generated samples")
    if result.get("eval"):
        first = result["eval"][0]
        flops = first["flops_per_sample"]
        lines += ["", f"FLOPs/sample: full depth (plain computation) {flops['full'] / 1e9:.4g} G, every unit and head "
                      f"{flops['masked_executed'] / 1e9:.4g} G"
                  + ("" if flops.get("plain") is None else f", plain network {flops['plain'] / 1e9:.4g} G")]
        lines += ["", f"eval {clock_name(result.get('clock', 'wall'))} (median of repeats; efficiency = time ratio / "
                      "FLOPs ratio)", EVAL_HEADER]
        lines += [format_eval_row(r) for r in result["eval"]]
        lines += ["", "every clock (median of interleaved repeats; 1-minute load average before -> after)"]
        lines += [format_clock_row(timing) for r in result["eval"] for timing in r.get("clocks", {}).values()]
        lines += [f"batch {r['batch_size']}: units run {r['units_fraction']:.3f}, "
                  f"{r['distinct_depth_patterns']} distinct depth patterns"
                  + ("" if "time_vs_plain" not in r else
                     ", time vs plain: " + ", ".join(f"{m} {v:.3f}" for m, v in r["time_vs_plain"].items()))
                  for r in result["eval"]]
    if result.get("memory"):
        lines += _format_memory(result)
    if result.get("training"):
        lines += [""] + format_training(result["training"])
    return "\n".join(lines)


def write_json_atomic(path: str, payload: dict) -> None:
    """Write ``payload`` as JSON (keys in insertion order) to ``path`` atomically."""
    atomic_write_json(path, payload, sort_keys=False)
