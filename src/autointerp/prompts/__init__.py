"""Stage 'prompts': the prompt-format registry, rendering of explainer prompts, token counts."""
