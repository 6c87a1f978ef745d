"""Stage 'extract': subject model, corpus, activation shards, neuron sets and train/valid records."""
