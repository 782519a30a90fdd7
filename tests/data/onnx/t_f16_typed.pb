
*€x€ðB	typed_f16