"""dlib's ResNet face descriptor (128-d) ported to torch. Filled in by the dlib-resnet issue."""
