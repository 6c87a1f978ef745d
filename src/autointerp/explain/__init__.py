"""Stage 'explain': rendered prompts -> the explainer's explanations."""
