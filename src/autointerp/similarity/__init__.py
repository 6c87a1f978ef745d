"""Stage 'similarity': embedding similarity to references (AdaCS) and Neuron Puzzles."""
