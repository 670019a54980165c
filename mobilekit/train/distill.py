"""Knowledge distillation (Hinton et al., arXiv:1503.02531): the student learns from the
labels (cross-entropy) and from a teacher's softened logits (KL divergence x T^2)."""
from mobilekit.keras import keras, tf


def distillation_loss(student_logits, teacher_logits, temperature):
    """KL(softmax(teacher / T) || softmax(student / T)) x T^2, per example."""
    t = tf.nn.softmax(teacher_logits / temperature)
    log_s = tf.nn.log_softmax(student_logits / temperature)
    log_t = tf.nn.log_softmax(teacher_logits / temperature)
    return tf.reduce_sum(t * (log_t - log_s), axis=-1) * temperature ** 2


class StudentWrapper(keras.Model):
    """What `fit` trains: calls the student. Compiling the wrapper instead of the student
    keeps the saved student free of losses, metrics and optimizer (a clean model.keras)."""

    def __init__(self, student, **kwargs):
        super().__init__(**kwargs)
        self.student = student

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)


class Distiller(StudentWrapper):
    """Trains `student` with loss = (1 - weight) x CE(labels) + weight x KD(teacher).

    Calling the distiller calls the student, so evaluation, metrics and saving see the
    student only; the teacher runs in inference mode and is never updated.
    """

    def __init__(self, student, teacher, temperature=4.0, weight=0.5, **kwargs):
        super().__init__(student, **kwargs)
        self.teacher = teacher
        self.teacher.trainable = False
        self.temperature = float(temperature)
        self.weight = float(weight)

    def train_step(self, data):
        x, y = data
        teacher_logits = self.teacher(x, training=False)
        with tf.GradientTape() as tape:
            logits = self.student(x, training=True)
            ce = self.compiled_loss(y, logits, regularization_losses=self.student.losses)
            kd = tf.reduce_mean(distillation_loss(logits, teacher_logits, self.temperature))
            loss = (1 - self.weight) * ce + self.weight * kd
        grads = tape.gradient(loss, self.student.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.student.trainable_variables))
        self.compiled_metrics.update_state(y, logits)
        return {"loss": loss, "distill_loss": kd, **{m.name: m.result() for m in self.metrics
                                                     if m.name != "loss"}}
