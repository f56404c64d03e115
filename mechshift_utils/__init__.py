"""mechshift_utils: the shared code of the mechshift notebooks, in layers that mirror the pipeline.

Each subpackage imports only those listed before it (tests/test_layers.py checks this, and that
no import cycle exists):

* ``core``: parameter checks, seeds, devices.
* ``tasks``: the task generators (word-level and natural text), the word tokenizer, examples
  encoded as tensors, pool files.
* ``models``: ModelPair, architecture adapters, the pair registry, one loader per published
  checkpoint layout, the embedded organism with its training and post-training.
* ``evaluation``: scoring both models on the same sequences, accuracy, common-correct pools.
* ``attribution``: the graph, the EAP / EAP-IG / exact-patching engine, its memory plan, cached
  attributions. (``evaluation`` and ``attribution`` do not import each other.)
* ``analysis``: circuits, ablations, structural comparison and verdicts, logit lens,
  specialization, neurons, statistics.
* ``notebook``: notebook parameters, the pair a notebook starts from, plotting, the headless runner.
"""
import warnings as _warnings

# The libraries below us import tqdm.auto, which in a Jupyter kernel without ipywidgets warns that it
# falls back to text bars; text bars are what this package uses on purpose (they read the same in
# run_all.sh logs and in JupyterLab), so the warning says nothing to a reader.
_warnings.filterwarnings("ignore", message="IProgress not found")
