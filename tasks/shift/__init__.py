"""Distribution-shift task family (ImageNet OOD sets, VisDA-2017, DomainBed, Sim10k -> Cityscapes)."""
