"""Classification scorers (detection, fuzzing): cheap, logprob-free evaluations of an explanation that any chat
model can run (Paulo et al. 2024; EleutherAI's delphi; SAEBench's autointerp), each figure with its chance floor."""
