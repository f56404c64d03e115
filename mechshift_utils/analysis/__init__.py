"""Analysis on top of attributions: circuits and their faithfulness, targeted ablations, structural
comparison and the claim-1/2 rules, the logit lens, specialization (claim 3), MLP neurons, and
small statistics."""
