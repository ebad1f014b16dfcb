"""The objects an experiment file's ``Experiment`` define builds.

They only hold what the YAML gives them; the trainer, the evaluator and the demo consume them.
An entry point builds only the parts it uses (``Experiment.build(config, parts=...)``), so evaluating
or running the demo never touches the training data.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

from concern.config import CompiledConfig, ConfigError, ObjectBuilder

EXPERIMENT_PARTS = ('structure', 'train', 'validation', 'evaluation', 'logger')


class Structure:
    """The model and everything that turns its output into results."""

    def __init__(self, builder: Any, representer: Any = None, measurer: Any = None, visualizer: Any = None):
        self.builder = builder
        self.representer = representer
        self.measurer = measurer
        self.visualizer = visualizer


class TrainSettings:
    """early_stopping: an ``EarlyStopping`` (training/early_stopping.py), or None: train all epochs.
    precise_bn: a ``PreciseBatchNorm`` (training/precise_bn.py): the BatchNorm statistics of the final weights
    recomputed over that many training batches before the final checkpoint; None (the original's way): the running
    averages training left."""

    def __init__(self, data_loader: Any, model_saver: Any = None, checkpoint: Any = None,
                 scheduler: Any = None, epochs: int = 10, early_stopping: Any = None, precise_bn: Any = None):
        self.data_loader = data_loader
        self.model_saver = model_saver
        self.checkpoint = checkpoint
        self.scheduler = scheduler
        self.epochs = int(epochs)
        self.early_stopping = early_stopping
        self.precise_bn = precise_bn


class ValidationSettings:
    """What to evaluate and how: validation during training and eval.py alike (``EvaluationSettings`` is the
    same class, under the name the evaluation section may use).

    data_loaders: name -> DataLoader (the first one's F-measure picks ``model/best`` in training); each is made an
    evaluation loader (:meth:`data.DataLoader.for_evaluation`), whatever its list file is called.
    visualize: send images to TensorBoard (training) / write pictures (eval.py --visualize).
    interval, exempt: during training, validate every ``interval`` iterations once past iteration ``exempt``.
    is_output_polygon: measure polygons instead of boxes (curved-text data sets).
    sweep: also report P/R/F over ``sweep_thresholds`` (default box_thresh 0.3, 0.35, ..., 0.9) from the same
    network pass; the main figure, and so best-model selection, is unchanged by it.
    resume: a checkpoint to evaluate (kept for the original's files; eval.py takes --resume).

    box_thresh is not set here: the representer's (``structure.representer.box_thresh``) is its single
    source, used for validation, evaluation and inference alike (``Experiment.build`` refuses the key here).
    """

    def __init__(self, data_loaders: Dict[str, Any], visualize: bool = False, interval: int = 100,
                 exempt: int = -1, is_output_polygon: bool = False, sweep: bool = False,
                 sweep_thresholds: Optional[List[float]] = None, resume: Optional[str] = None):
        if not isinstance(data_loaders, dict) or not data_loaders:
            raise ValueError('data_loaders must be a non-empty mapping of name -> DataLoader')
        if sweep_thresholds is not None and (not isinstance(sweep_thresholds, (list, tuple)) or not sweep_thresholds
                                             or not all(isinstance(value, (int, float)) for value in sweep_thresholds)):
            raise ValueError(f'sweep_thresholds: expected a non-empty list of numbers, got {sweep_thresholds!r}')
        for loader in data_loaders.values():  # in order, each sample once, ground truth as annotated
            for_evaluation = getattr(loader, 'for_evaluation', None)
            if callable(for_evaluation):
                for_evaluation()
        self.data_loaders = data_loaders
        self.visualize = bool(visualize)
        self.interval = int(interval)
        self.exempt = int(exempt)
        self.is_output_polygon = bool(is_output_polygon)
        self.sweep = bool(sweep)
        self.sweep_thresholds = None if sweep_thresholds is None else [float(value) for value in sweep_thresholds]
        self.resume = resume


# The evaluation section's class name in this project's earlier files: the same settings.
EvaluationSettings = ValidationSettings

# Keys of the validation / evaluation settings that moved, and where to set them now.
MOVED_SETTINGS = {'box_thresh': 'structure.representer.box_thresh'}


class Experiment:
    def __init__(self, structure: Optional[Structure], train: Optional[TrainSettings] = None,
                 validation: Any = None, evaluation: Any = None, logger: Any = None):
        self.structure = structure  # None only when built without the 'structure' part
        self.train = train
        self.validation = validation
        # The original's files alias evaluation to validation (``evaluation: *validate``).
        self.evaluation = evaluation if evaluation is not None else validation
        self.logger = logger
        self.config: Optional[CompiledConfig] = None

    @classmethod
    def build(cls, config: CompiledConfig, parts: Iterable[str] = EXPERIMENT_PARTS) -> 'Experiment':
        """Build the ``Experiment`` define of ``config``, only the top-level ``parts`` asked for."""
        parts = tuple(parts)
        unknown = set(parts) - set(EXPERIMENT_PARTS)
        if unknown:
            raise ValueError(f'unknown experiment part(s) {sorted(unknown)}; known: {EXPERIMENT_PARTS}')
        tree = config.tree
        where = f"{config.source}: define '{config.define}'"
        experiment_class = tree.get('class', 'Experiment')
        if experiment_class not in ('Experiment', 'experiment.Experiment'):
            raise ConfigError(f"{where}, key 'class': the experiment must be class Experiment, "
                              f'got {experiment_class!r}')
        unknown_keys = set(tree) - set(EXPERIMENT_PARTS) - {'class'}
        if unknown_keys:
            raise ConfigError(f"{where}, key '{sorted(unknown_keys)[0]}': unknown argument for class Experiment "
                              f'(accepted: {", ".join(EXPERIMENT_PARTS)})')
        if tree.get('structure') is None:  # absent or empty: an experiment always has a structure
            raise ConfigError(f"{where}: class Experiment needs argument 'structure'")
        # validation is built for evaluation too when there is no evaluation section
        checked = [part for part in ('validation', 'evaluation') if part in parts]
        if 'evaluation' in parts and tree.get('evaluation') is None and 'validation' not in checked:
            checked.insert(0, 'validation')
        for part in checked:
            _refuse_moved_settings(config, tree.get(part), part)
        builder = ObjectBuilder(config)
        built = {part: builder.build(tree[part], part) for part in parts if tree.get(part) is not None}
        if 'evaluation' in parts and 'evaluation' not in built and tree.get('validation') is not None:
            # No evaluation section: evaluate on the validation loaders, as the original's alias did.
            built['evaluation'] = built.get('validation') or builder.build(tree['validation'], 'validation')
        experiment = cls(**built) if 'structure' in built else cls(structure=None, **built)
        if 'evaluation' not in parts:
            experiment.evaluation = None
        if 'validation' not in parts:
            experiment.validation = None
        experiment.config = config
        return experiment


def _refuse_moved_settings(config: CompiledConfig, node: Any, part: str) -> None:
    """A clear error, naming the file, the define and the key, for a setting that moved elsewhere."""
    if not isinstance(node, dict):
        return
    for key, target in MOVED_SETTINGS.items():
        if key in node:
            define, source = config.origin_of(node, (config.define, config.source))
            raise ConfigError(f"{source}: define '{define}', key '{part}.{key}': {part} settings no longer take "
                              f'{key!r}; set it once as {target} (the one value used for validation, '
                              f'evaluation and inference), e.g. --opt {target}={node[key]}')
