"""ESPnet task classes with the sofa-speechlm components registered (SofaLMTask in tasks.lm)."""
