"""Learning-rate schedules with linear warmup, stepped per optimizer iteration.

The schedule is a function of the optimizer's iteration counter, which the checkpoint
restores, so a resumed run continues on exactly the same curve.
"""
import math

from mobilekit.errors import check_choice
from mobilekit.keras import keras, register, tf

SCHEDULES = ("cosine", "step")


@register("mobilekit")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `base_lr` over `warmup_steps`, then cosine decay to
    `base_lr * final_fraction` at `total_steps`, or step decay (x `gamma` every `step_every`)."""

    def __init__(self, base_lr, total_steps, warmup_steps=0, kind="cosine", final_fraction=0.0,
                 step_every=1, gamma=0.1):
        super().__init__()
        check_choice("schedule", kind, SCHEDULES)
        self.base_lr = float(base_lr)
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, int(warmup_steps))
        self.kind = kind
        self.final_fraction = float(final_fraction)
        self.step_every = max(1, int(step_every))
        self.gamma = float(gamma)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.base_lr * (step + 1) / max(1, self.warmup_steps)
        after = tf.maximum(step - self.warmup_steps, 0.0)
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = tf.minimum(after / span, 1.0)
            cos = 0.5 * (1 + tf.cos(math.pi * progress))
            decayed = self.base_lr * (self.final_fraction + (1 - self.final_fraction) * cos)
        else:
            decayed = self.base_lr * tf.pow(self.gamma, tf.floor(after / self.step_every))
        return tf.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {"base_lr": self.base_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "kind": self.kind,
                "final_fraction": self.final_fraction, "step_every": self.step_every,
                "gamma": self.gamma}


def make_schedule(kind, base_lr, epochs, steps_per_epoch, warmup_epochs=0.0, step_epochs=None,
                  gamma=0.1):
    """Schedule over `epochs` x `steps_per_epoch`; step decay every `step_epochs` epochs
    (default: a third of the run)."""
    check_choice("schedule", kind, SCHEDULES)
    step_epochs = step_epochs or max(1, math.ceil(epochs / 3))
    return WarmupSchedule(base_lr, epochs * steps_per_epoch,
                          round(warmup_epochs * steps_per_epoch), kind,
                          step_every=step_epochs * steps_per_epoch, gamma=gamma)
