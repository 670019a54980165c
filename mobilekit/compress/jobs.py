"""The three compression jobs behind `mobilekit compress`: run dir in, run dir out.

Each job compresses the best model of a training run, fine-tunes it on the run's data
(mobilekit.compress.finetune.compress_run) and writes a new run directory whose
metrics.json holds the accuracies before / after and the method's measurements.
"""
from mobilekit.compress import finetune

DEFAULT_EPOCHS = 2
# Polynomial pruning reaches its target at this fraction of the fine-tune, then the
# remaining steps recover accuracy at constant sparsity.
PRUNE_END_FRACTION = 0.75
PRUNE_UPDATES = 10  # mask updates between begin and end (sets the frequency)


def prune_schedule_steps(total_steps, schedule="polynomial"):
    """(end_step, frequency) so that sparsity actually appears in a short fine-tune.

    tfmot's default frequency of 100 steps would never prune a run of < 100 steps.
    """
    end = max(1, int(total_steps * PRUNE_END_FRACTION))
    frequency = max(1, min(100, end // PRUNE_UPDATES))
    end = max(frequency, end // frequency * frequency)  # last update lands on end_step
    return (end if schedule == "polynomial" else None), frequency


def prune_run(run_dir, sparsity=0.5, schedule="polynomial", xnnpack_sparse=False,
              frequency=None, out=None, epochs=DEFAULT_EPOCHS, **kwargs):
    """Magnitude pruning + fine-tune; metrics has per-layer sparsity and gzip sizes."""
    from mobilekit.compress import pruning

    if epochs < 1:
        raise ValueError(f"pruning happens during fine-tuning: epochs must be >= 1; got {epochs}")
    settings = {"target_sparsity": sparsity, "schedule": schedule,
                "xnnpack_sparse": xnnpack_sparse}

    def compress(model, steps):
        end, freq = prune_schedule_steps(steps * max(epochs, 1), schedule)
        freq = frequency or freq
        settings.update(end_step=end, frequency=freq)
        report = {}
        if xnnpack_sparse:
            model = pruning.xnnpack_sparse_layout(model)
            report["layout_changed"] = True
        pruned = pruning.prune_model(model, sparsity, schedule, 0, end, freq,
                                     xnnpack_policy=xnnpack_sparse)
        return pruned, report

    def measure(final, source, out):
        from mobilekit.export.convert import convert

        dense = convert(source, "fp32")
        pruned = convert(final, "fp32")
        report = {"sparsity": pruning.sparsity_report(final),
                  "tflite_fp32_bytes": len(pruned), "tflite_fp32_gzip_bytes":
                  pruning.gzip_size(pruned), "source_tflite_fp32_bytes": len(dense),
                  "source_tflite_fp32_gzip_bytes": pruning.gzip_size(dense)}
        report["gzip_ratio"] = round(report["source_tflite_fp32_gzip_bytes"]
                                     / report["tflite_fp32_gzip_bytes"], 3)
        if xnnpack_sparse:
            from mobilekit.io import write_atomic

            sparse = pruning.convert_sparse(final)
            write_atomic(out / SPARSE_TFLITE, sparse, mode="wb")
            report.update(sparse_tflite=SPARSE_TFLITE, sparse_tflite_bytes=len(sparse))
        return report

    return finetune.compress_run(
        run_dir, "pruned", compress, out=out, epochs=epochs, finish=pruning.strip,
        measure=measure, callbacks=pruning.pruning_callbacks(), settings=settings,
        measure_compressed=xnnpack_sparse, **kwargs)


SPARSE_TFLITE = "model_fp32_sparse.tflite"


def channel_prune_run(run_dir, macs_fraction=0.7, ratio=None, criterion="l1", divisor=1,
                      out=None, epochs=DEFAULT_EPOCHS, **kwargs):
    """Structured channel pruning + fine-tune; metrics has MACs / params before and after."""
    from mobilekit.compress import channel_prune as cp

    settings = {"macs_fraction": None if ratio is not None else macs_fraction,
                "ratio": ratio, "criterion": criterion, "divisor": divisor}

    def compress(model, steps):
        if ratio is not None:
            pruned, plan = cp.channel_prune(model, ratio=ratio, criterion=criterion,
                                            divisor=divisor)
        else:
            pruned, plan = cp.channel_prune(model, target_macs_fraction=macs_fraction,
                                            criterion=criterion, divisor=divisor)
        groups = cp.prunable_groups(model)
        kept = {name: {"channels": groups[name].channels, "kept": int(len(idx))}
                for name, idx in plan.items()}
        return pruned, {**finetune.cost_summary(model, pruned), "groups": kept}

    return finetune.compress_run(run_dir, "channel-pruned", compress, out=out, epochs=epochs,
                                 settings=settings, **kwargs)


def svd_run(run_dir, energy=0.9, layers=None, out=None, epochs=DEFAULT_EPOCHS, **kwargs):
    """Low-rank (SVD) factorisation + fine-tune; metrics has MACs / params and ranks."""
    from mobilekit.compress import lowrank

    settings = {"energy": energy, "layers": layers}

    def compress(model, steps):
        new, report = lowrank.svd_factorize(model, energy, layers)
        return new, {**finetune.cost_summary(model, new), "factorized": report["replaced"],
                     "layers": report["layers"]}

    return finetune.compress_run(run_dir, "svd", compress, out=out, epochs=epochs,
                                 settings=settings, **kwargs)
