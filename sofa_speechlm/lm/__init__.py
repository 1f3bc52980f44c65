"""The SOFA SpeechLM as an ESPnet LM component: backbone loading, fine-tuning modes, loss, decoding."""
