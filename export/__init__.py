"""PyTorch side of Object2Vec: hyperparameters, network, training, ONNX export.

Modules that the server imports (`facts`, `padding`) need only numpy; the rest needs torch.
"""
