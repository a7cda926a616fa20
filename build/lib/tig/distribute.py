"""tf.distribute strategies for train.py: one device, several devices of one machine
(MirroredStrategy) or several machines (MultiWorkerMirroredStrategy configured by TF_CONFIG).
The model is built and compiled under strategy.scope(); Keras' fit then splits every global batch
(per-replica batch x replicas) across the replicas and all-reduces the gradients.

    python train.py --task hotel --distribute mirrored                       # every GPU of this machine
    TIG_CPU_DEVICES=2 python train.py --task hotel --distribute mirrored     # 2 logical CPU devices (dev, CI)
    TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]},
                "task": {"type": "worker", "index": 0}}' python train.py --task thucnews --distribute multiworker

auto: MultiWorkerMirroredStrategy when TF_CONFIG is set, MirroredStrategy when more than one GPU
(or TIG_CPU_DEVICES > 1 logical CPU devices) is visible, else the default one-device strategy.
In a multi-worker run only the chief (worker 0, or the "chief" task) writes the checkpoint.
"""
import json
import os

STRATEGIES = ("auto", "none", "mirrored", "multiworker")
CPU_DEVICES_ENV = "TIG_CPU_DEVICES"
MAX_CPU_DEVICES = 64      # logical CPU devices: each is a replica; 999 made no progress in 300 s


def cpu_devices_requested():
    value = os.environ.get(CPU_DEVICES_ENV, "").strip()
    if not value:
        return 0
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_CPU_DEVICES:
        from tig.errors import UserError
        raise UserError(f"${CPU_DEVICES_ENV} must be an integer from 1 to {MAX_CPU_DEVICES}, got {value[:20]!r}")
    return int(value)


def split_cpu():
    """Split the CPU into $TIG_CPU_DEVICES logical devices; must run before TensorFlow starts its runtime."""
    import tensorflow as tf
    n = cpu_devices_requested()
    if n > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    return n


def choose(name):
    """The strategy name `auto` resolves to on this machine."""
    if name != "auto":
        return name
    import tensorflow as tf
    if os.environ.get("TF_CONFIG"):
        return "multiworker"
    if len(tf.config.list_physical_devices("GPU")) > 1 or cpu_devices_requested() > 1:
        return "mirrored"
    return "none"


def make_strategy(name="auto"):
    """(strategy, resolved name). Call first thing in a program: multi-worker collectives and logical
    CPU devices must be set up before TensorFlow runs any op."""
    import tensorflow as tf
    from tig.errors import UserError
    if name not in STRATEGIES:
        raise UserError(f"unknown --distribute {name!r}; choose one of: {', '.join(STRATEGIES)}")
    split_cpu()
    name = choose(name)
    if name == "none":
        return tf.distribute.get_strategy(), name
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy(), name
        # no GPU: mirror over the (logical) CPU devices; NCCL is GPU-only, so reduce on one device
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(cpus, cross_device_ops=tf.distribute.ReductionToOneDevice()), name
    if not os.environ.get("TF_CONFIG"):
        raise UserError("--distribute multiworker needs $TF_CONFIG (cluster addresses and this worker's index)")
    try:
        json.loads(os.environ["TF_CONFIG"])
    except ValueError as e:
        raise UserError(f"$TF_CONFIG is not valid JSON ({e})") from None
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options), name


def devices_of(strategy):
    """The devices a strategy computes on (one per replica of this worker), by name."""
    extended = getattr(strategy, "extended", None)
    return [str(d) for d in getattr(extended, "worker_devices", ())]


def is_chief(strategy):
    """True unless this process is a non-chief worker of a multi-worker run (those must not write)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def shard_by_data(ds):
    """Multi-worker input: each worker takes every n-th element of the one dataset (an in-memory
    dataset has no files to shard by); no effect on one machine."""
    import tensorflow as tf
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def build_before_fit(model, strategy, sample_batch):
    """Work around two failures of Keras 3.15's fit() under MultiWorkerMirroredStrategy
    (keras-team/keras#20585); no effect with any other strategy.

    1. To learn the input shapes, fit all-reduces the first (integer) batch across workers, which
       fails: build the model, metrics and optimizer from a local sample batch instead.
    2. Each step's logs are then reduced with strategy.reduce("MEAN", v, axis=0), which fails on the
       scalar metric values: return them as shape [1], whose mean over replicas and axis 0 is the
       same number (metric variables are summed over all replicas on write, so every replica
       already holds the global value).
    """
    import tensorflow as tf
    from tig.keras_compat import build_from_local_batch
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    build_from_local_batch(model, strategy, sample_batch)     # 1. (private Keras API: tig/keras_compat.py)
    for name in ("train_step", "test_step"):
        def step(data, original=getattr(model, name)):
            return {key: tf.reshape(value, [1]) for key, value in original(data).items()}
        setattr(model, name, step)


def predict_locally(model, token_ids, batch_size=256):
    """Class probabilities from this process's copy of the weights (identical on every replica after
    training), in input order and without collectives, so each worker can score the test split alone."""
    import numpy as np
    return np.concatenate([np.asarray(model(token_ids[i:i + batch_size], training=False))
                           for i in range(0, len(token_ids), batch_size)])
