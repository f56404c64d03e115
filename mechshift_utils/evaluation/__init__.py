"""Evaluation: both models of a pair scored on the same sequences (logits for slot i read at
i - 1, decoding left to right or by confidence), accuracy per task and along post-training, and
the common-correct pools the circuits are traced on."""
