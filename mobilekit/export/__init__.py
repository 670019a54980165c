"""TFLite conversion (every quant mode), model reports and embedded metadata."""
