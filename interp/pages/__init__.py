"""A page per neuron and per head, as Neuronpedia shows one: examples from a corpus, the
activation's distribution, token tables from the weights, and who it reads from and writes to.

    page = interp.neuron_page(model, "L1N5")
    page.top, page.promoted, page.to_frame()
    fig = interp.plots.neuron_page(page)
"""

from interp.pages.build import component_pages, head_page, neuron_page
from interp.pages.page import HeadPage, NeuronPage, Page

__all__ = ["HeadPage", "NeuronPage", "Page", "component_pages", "head_page", "neuron_page"]
