"""Training into run directories: trainer, schedules, distillation, resume, evaluation."""
