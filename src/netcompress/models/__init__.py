"""Model zoo: LeNet-300-100, LeNet-5 (Caffe), Hinton's MLPs, CIFAR ResNet-20/32/44/56, VGG-small; and the real
pretrained MiniLM-L6 sentence encoder (``load_minilm``, optional packages; not in the image-model registry)."""
from .builder import is_model_builder, model_builder
from .minilm import SentenceEncoder, embed, load_minilm, load_tokenizer, tokenize
from .zoo import (MLP, MODELS, BasicBlock, CifarResNet, LeNet5, VGGSmall, create_model, lenet5, lenet_300_100,
                  mlp, mlp_800_800, mlp_1200_1200, resnet20, resnet32, resnet44, resnet56, vgg_small)

__all__ = ["MLP", "MODELS", "BasicBlock", "CifarResNet", "LeNet5", "SentenceEncoder", "VGGSmall", "create_model",
           "embed", "is_model_builder", "lenet5", "lenet_300_100", "load_minilm", "load_tokenizer", "mlp", "mlp_800_800", "mlp_1200_1200", "model_builder",
           "resnet20", "resnet32", "resnet44", "resnet56", "tokenize", "vgg_small"]
