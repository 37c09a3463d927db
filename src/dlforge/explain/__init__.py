"""Explanations: which parts of an input drove a model's score, with checks of how far to trust them.

    explain(predictor, items, method=None, target=None, box=None) -> [Explanation]   (.to_dict(): JSON)
    write(explanations, out_dir, names)   a picture (PNG, or HTML for texts) and a JSON file per input
    randomisation(predictor, items, method)   the model-randomisation sanity check (rank correlations)

Methods are Captum's (Integrated Gradients, Saliency, Grad-CAM, Occlusion), LIME's and SHAP's, chosen by the input
kind; the checks are ours (`checks.py`). Tasks say what is explained (`Task.explain_target`).
"""

from dlforge.explain.core import explain, explain_json, methods
from dlforge.explain.explanation import Explanation
from dlforge.explain.randomisation import randomisation
from dlforge.explain.render import summary, write, write_summary

__all__ = ["Explanation", "explain", "explain_json", "methods", "randomisation", "summary", "write", "write_summary"]
