"""Static vocabulary the data generator draws from: fictional names and a small fashion catalogue.

Every name here is invented; email addresses use the reserved ``example.com`` domain and phone
numbers the fictional 555-01xx range, so nothing generated can reach a real person.
"""

from __future__ import annotations

FIRST_NAMES: tuple[str, ...] = (
    "Avery", "Blake", "Camille", "Dario", "Elin", "Farah", "Gideon", "Hana", "Ilse", "Jonah",
    "Kaia", "Lionel", "Maren", "Nils", "Odette", "Pavel", "Quinn", "Rosalind", "Soren", "Talia",
    "Ulrich", "Vera", "Wendell", "Ximena", "Yusuf", "Zelda", "Anouk", "Bastian", "Clio", "Desmond",
)  # fmt: skip

LAST_NAMES: tuple[str, ...] = (
    "Abernathy", "Brightwater", "Castellano", "Drummond", "Eversley", "Falkenrath", "Greenholt",
    "Halvorsen", "Ingleby", "Jankowicz", "Kettleborough", "Lindqvist", "Marchetti", "Northcott",
    "Okonkwo", "Pemberton", "Quennell", "Rasmussen", "Stavros", "Thistlewood", "Underhill",
    "Vasquez-Rowe", "Whitcombe", "Yamashiro", "Zellweger",
)  # fmt: skip

COMPANY_NAMES: tuple[str, ...] = (
    "Fabrikam Outfitters",
    "Northwind Uniforms",
    "Tailspin Boutique",
)

# (name, description, base price in USD): names follow the Commerce demo catalogue's style.
PRODUCTS: tuple[tuple[str, str, str], ...] = (
    ("Black Blazer", "Tailored single-breasted blazer in black wool blend.", "129.99"),
    ("Men's Boat Shoes", "Leather boat shoes with non-marking soles.", "79.50"),
    ("Women's Hoodie", "Brushed fleece hoodie with kangaroo pocket.", "49.99"),
    ("Classic Denim Jacket", "Mid-wash denim jacket with button front.", "89.00"),
    ("Linen Summer Shirt", "Breathable linen shirt, relaxed fit.", "45.25"),
    ("Leather Belt", "Full-grain leather belt with brushed buckle.", "34.95"),
    ("Wool Scarf", "Soft merino scarf, 180 cm.", "29.99"),
    ("Canvas Tote Bag", "Heavy canvas tote with inner pocket.", "24.50"),
    ("Aviator Sunglasses", "Metal-frame aviators with polarised lenses.", "119.00"),
    ("Running Sneakers", "Lightweight mesh running shoes.", "99.95"),
    ("Slim Chinos", "Stretch cotton chinos, slim fit.", "59.99"),
    ("Cashmere Sweater", "Crew-neck sweater in pure cashmere.", "189.00"),
    ("Silk Tie", "Woven silk tie, 8 cm blade.", "39.90"),
    ("Rain Parka", "Waterproof parka with taped seams.", "149.75"),
    ("Ankle Boots", "Suede ankle boots with side zip.", "134.49"),
    ("Pleated Midi Skirt", "Flowing pleated skirt in satin finish.", "69.00"),
    ("Graphic T-Shirt", "Organic cotton tee with print.", "19.99"),
    ("Quilted Vest", "Lightweight quilted vest.", "74.25"),
    ("Knit Beanie", "Ribbed knit beanie.", "17.50"),
    ("Chelsea Boots", "Leather Chelsea boots with elastic gussets.", "159.99"),
    ("Oxford Shirt", "Button-down Oxford cotton shirt.", "54.00"),
    ("Yoga Leggings", "High-rise leggings with four-way stretch.", "44.99"),
    ("Trench Coat", "Double-breasted cotton trench coat.", "219.00"),
    ("Leather Wallet", "Bifold wallet with card slots.", "49.50"),
    ("Sports Watch", "Water-resistant watch with silicone strap.", "89.99"),
    ("Swim Shorts", "Quick-dry swim shorts.", "32.00"),
    ("Flannel Shirt", "Checked flannel shirt.", "42.75"),
    ("Crossbody Bag", "Compact crossbody bag in pebbled leather.", "95.00"),
    ("Loafers", "Penny loafers in polished leather.", "109.90"),
    ("Puffer Jacket", "Down-filled puffer jacket.", "179.99"),
    ("Cotton Socks 3-Pack", "Combed cotton socks.", "14.99"),
    ("Baseball Cap", "Six-panel twill cap.", "22.00"),
    ("Wrap Dress", "Jersey wrap dress with tie waist.", "79.99"),
    ("Cargo Pants", "Relaxed cargo pants in ripstop.", "64.50"),
    ("Polo Shirt", "Pique cotton polo.", "36.99"),
    ("Gift Card", "Electronic gift card.", "50.00"),
    ("Travel Duffel", "Water-resistant weekender duffel.", "129.00"),
    ("Leather Gloves", "Lined leather gloves.", "58.25"),
    ("Denim Jeans", "Straight-leg jeans, rigid denim.", "74.99"),
    ("Fedora Hat", "Wool felt fedora.", "65.00"),
)
