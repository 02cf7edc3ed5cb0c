"""The realistic model of the performance issue, named once for every benchmark."""

# hcnn, enc_dim 512, token embedding 300, 4 layers, vocabulary 50,000; inputs of 20 to 80 tokens.
REALISTIC = {
    "enc0_network": "hcnn",
    "enc0_vocab_size": 50_000,
    "enc1_vocab_size": 50_000,
    "enc0_max_seq_len": 80,
    "enc1_max_seq_len": 80,
    "enc_dim": 512,
    "enc0_token_embedding_dim": 300,
    "enc0_layers": 4,
}
TOKENS_PER_SEQUENCE = (20, 81)  # numpy's integers(low, high): 20 to 80
